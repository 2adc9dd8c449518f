// floatzip._floatzip: the thin C++ layer under the Python package (python/floatzip/).
//
// Everything here goes through floatzip's public API: compress_file / decompress_file /
// verify_file for files, container_reader for reading tensors out of a .fzip, make_encode_plan /
// encode_bundle / parse_bundle / decompress for single tensors. Memory is owned by Python: the
// package allocates NumPy arrays or torch tensors and the functions here decode straight into
// them (DLPack or the buffer protocol through nanobind's ndarray), so the binding adds no copy.
// The GIL is released while the library works. The library's errors are raised as the package's
// FloatzipError with the library's message (the text the CLI prints) and the errc name as `code`.
#include "floatzip_ext.hpp"

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "floatzip/container.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/error.hpp"
#include "floatzip/safetensors.hpp"

namespace nb = nanobind;

namespace floatzip::python {
namespace {

// The package's exception class (floatzip.FloatzipError), handed over by floatzip/__init__.py
// before anything can fail. Kept for the life of the process, like the module itself.
PyObject* g_error_type = nullptr;

void raise_floatzip_error(const error& e) {
  PyObject* type = g_error_type != nullptr ? g_error_type : PyExc_RuntimeError;
  PyObject* instance = g_error_type != nullptr
                           ? PyObject_CallFunction(type, "ss", e.message.c_str(), to_string(e.code))
                           : PyObject_CallFunction(type, "s", e.message.c_str());
  if (instance == nullptr) return;  // the call set its own exception
  PyErr_SetObject(type, instance);
  Py_DECREF(instance);
}

// ---- files --------------------------------------------------------------------------------------

nb::dict compress_file_py(const std::string& input, const std::string& output, unsigned threads) {
  compress_options options;
  options.codec.threads = threads;
  result<container_totals> totals = [&] {
    nb::gil_scoped_release unlocked;
    return compress_file(input, output, options);
  }();
  if (!totals) throw_if_error(totals.error());
  return totals_dict(*totals);
}

void decompress_file_py(const std::string& input, const std::string& output, unsigned threads) {
  decompress_options options;
  options.codec.threads = threads;
  error e;
  {
    nb::gil_scoped_release unlocked;
    e = decompress_file(input, output, options);
  }
  throw_if_error(e);
}

void verify_file_py(const std::string& original, const std::string& compressed, unsigned threads) {
  decompress_options options;
  options.codec.threads = threads;
  error e;
  {
    nb::gil_scoped_release unlocked;
    e = verify_file(original, compressed, options);
  }
  throw_if_error(e);
}

// ---- single tensors -----------------------------------------------------------------------------

// One BF16 tensor -> a serialized bundle, encoded straight into the bytes object returned.
nb::bytes compress_py(const host_array_ro& values, int max_code_length, unsigned threads) {
  const std::span<const std::uint16_t> tensor = bf16_span(values, "compress");
  encode_options options;
  options.max_code_length = max_code_length;
  options.threads = threads;
  throw_if_error(validate(options));
  const std::span<const std::uint16_t> tensors[] = {tensor};
  encode_plan plan = [&] {
    nb::gil_scoped_release unlocked;
    return make_encode_plan(tensors, options);
  }();
  PyObject* raw = PyBytes_FromStringAndSize(nullptr, Py_ssize_t(plan.encoded_size()));
  if (raw == nullptr) throw nb::python_error();
  nb::bytes out = nb::steal<nb::bytes>(raw);
  // Nobody else sees the bytes object before it is returned, so filling it unlocked is safe.
  auto* destination = reinterpret_cast<std::byte*>(PyBytes_AsString(raw));
  error e;
  {
    nb::gil_scoped_release unlocked;
    e = encode_bundle(plan, {destination, std::size_t(plan.encoded_size())});
  }
  throw_if_error(e);
  return out;
}

bundle_view parse_or_throw(const host_array_ro& data) {
  result<bundle_view> view = parse_bundle(byte_span(data));
  if (!view) throw_if_error(view.error());
  return *view;
}

// (value_count, tensor_count) of a serialized bundle, after validating it.
std::tuple<std::uint64_t, std::uint32_t> bundle_info_py(const host_array_ro& data) {
  const bundle_view view = parse_or_throw(data);
  return {view.value_count(), view.tensor_count()};
}

void decompress_py(const host_array_ro& data, const host_array& out, unsigned threads) {
  const bundle_view view = parse_or_throw(data);
  const std::span<std::uint16_t> values = bf16_span(out, "decompress");
  if (values.size() != view.value_count())
    throw_if_error({errc::insufficient_space,
                    "decompress: the data holds " + std::to_string(view.value_count()) +
                        " values, the output has room for " + std::to_string(values.size())});
  error e;
  {
    nb::gil_scoped_release unlocked;
    e = decompress(view, values, decode_threads(threads));
  }
  throw_if_error(e);
}

// ---- reading a .fzip ----------------------------------------------------------------------------

// The C++ side of load_file on the CPU with nothing in between: open, decode every coded bundle
// into an uninitialised buffer of its own, copy every raw tensor out, keep everything until the
// end (as a load does). The benchmark (bench/python_load.py) times load_file against this to
// measure what the Python layer costs. Returns the bytes produced.
std::uint64_t decode_all_native(const std::string& path, unsigned threads) {
  nb::gil_scoped_release unlocked;
  result<container_reader> opened = container_reader::open(path);
  if (!opened) throw_if_error(opened.error());
  const container_reader& r = *opened;
  std::vector<std::unique_ptr<std::byte[]>> decoded;
  std::vector<std::unique_ptr<std::byte[]>> raw;
  std::uint64_t produced = 0;
  for (std::uint32_t b = 0; b < r.bundles().size(); ++b) {
    const container_bundle& rec = r.bundles()[b];
    if (rec.kind != bundle_kind::huffman) continue;
    decoded.push_back(std::make_unique_for_overwrite<std::byte[]>(rec.decoded_bytes));
    throw_if_error(r.decode_bundle(b, {decoded.back().get(), std::size_t(rec.decoded_bytes)},
                                   decode_threads(threads)));
    produced += rec.decoded_bytes;
  }
  for (const container_tensor& t : r.tensors()) {
    if (r.bundles()[t.bundle].kind == bundle_kind::huffman) continue;
    raw.push_back(std::make_unique_for_overwrite<std::byte[]>(t.size_bytes()));
    throw_if_error(
        r.read_tensor(t, {raw.back().get(), std::size_t(t.size_bytes())}, decode_threads(threads)));
    produced += t.size_bytes();
  }
  return produced;
}

}  // namespace

#ifndef FLOATZIP_PYTHON_CUDA
void bind_cuda(nb::module_&) {}
#endif

}  // namespace floatzip::python

NB_MODULE(_floatzip, m) {
  using namespace floatzip::python;
  namespace fz = floatzip;
  m.doc() = "floatzip's C++ core; use the floatzip package, not this module.";

  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const fz::exception& e) {
      raise_floatzip_error(e.err());
    }
  });
  m.def(
      "_set_error_type",
      [](nb::handle type) {
        Py_XINCREF(type.ptr());
        g_error_type = type.ptr();
      },
      "Installs the exception class the library's errors are raised as.");

  m.def("compress_file", &compress_file_py, nb::arg("input"), nb::arg("output"),
        nb::arg("threads") = 0);
  m.def("decompress_file", &decompress_file_py, nb::arg("input"), nb::arg("output"),
        nb::arg("threads") = 0);
  m.def("verify_file", &verify_file_py, nb::arg("original"), nb::arg("compressed"),
        nb::arg("threads") = 0);
  m.def("compress", &compress_py, nb::arg("values"), nb::arg("max_code_length") = 12,
        nb::arg("threads") = 0);
  m.def("bundle_info", &bundle_info_py, nb::arg("data"));
  m.def("decompress", &decompress_py, nb::arg("data"), nb::arg("out"), nb::arg("threads") = 0);
  m.def("decode_all_native", &decode_all_native, nb::arg("path"), nb::arg("threads") = 0);

  nb::class_<reader>(m, "Reader")
      .def(nb::init<const std::string&, bool>(), nb::arg("path"),
           nb::arg("verify_checksums") = true)
      .def_prop_ro("name", [](const reader& r) { return r.get().name(); })
      .def_prop_ro("file_size", [](const reader& r) { return r.get().file_size(); })
      .def_prop_ro("original_size", [](const reader& r) { return r.get().original_size(); })
      .def("tensors", &reader::tensors)
      .def("bundles", &reader::bundles)
      .def("metadata", &reader::metadata)
      .def("decode_bundle", &reader::decode_bundle, nb::arg("bundle"), nb::arg("out"),
           nb::arg("threads") = 0)
      .def("read_tensor", &reader::read_tensor, nb::arg("index"), nb::arg("out"),
           nb::arg("threads") = 0)
      .def("verify_all", &reader::verify_all, nb::arg("threads") = 0)
      .def("totals", &reader::totals);

  m.attr("has_cuda") = FLOATZIP_PYTHON_HAS_CUDA;
  bind_cuda(m);
}
