// floatzip._floatzip: what the binding's translation units share (floatzip_ext.cpp, and
// cuda_loader.cpp when the extension is built with the CUDA decoder).
#pragma once

#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <vector>

#include "floatzip/container.hpp"
#include "floatzip/error.hpp"

#ifdef FLOATZIP_PYTHON_CUDA
#define FLOATZIP_PYTHON_HAS_CUDA true
#else
#define FLOATZIP_PYTHON_HAS_CUDA false
#endif

namespace floatzip::python {

namespace nb = nanobind;

// Element-size checks on the arrays Python hands in: the package passes 16-bit views (uint16,
// int16, bfloat16) for BF16 values (compress, decompress) and uint8 views for bytes (a bundle's
// decoded values of any format, raw tensors), whatever the framework.
using host_array = nb::ndarray<nb::c_contig, nb::device::cpu>;
using host_array_ro = nb::ndarray<nb::ro, nb::c_contig, nb::device::cpu>;

inline std::span<std::uint16_t> bf16_span(const host_array& a, const char* what) {
  if (a.dtype().bits != 16 || a.dtype().lanes != 1)
    throw_if_error({errc::invalid_argument,
                    std::string(what) + ": expected 16-bit elements (BF16 bit patterns), got " +
                        std::to_string(a.dtype().bits) + "-bit"});
  return {static_cast<std::uint16_t*>(a.data()), a.size()};
}

inline std::span<const std::uint16_t> bf16_span(const host_array_ro& a, const char* what) {
  if (a.dtype().bits != 16 || a.dtype().lanes != 1)
    throw_if_error({errc::invalid_argument,
                    std::string(what) + ": expected 16-bit elements (BF16 bit patterns), got " +
                        std::to_string(a.dtype().bits) + "-bit"});
  return {static_cast<const std::uint16_t*>(a.data()), a.size()};
}

inline std::span<std::byte> byte_span(const host_array& a) {
  return {static_cast<std::byte*>(a.data()), a.nbytes()};
}

inline std::span<const std::byte> byte_span(const host_array_ro& a) {
  return {static_cast<const std::byte*>(a.data()), a.nbytes()};
}

inline decode_options decode_threads(unsigned threads) {
  decode_options options;
  options.threads = threads;
  return options;
}

inline nb::dict totals_dict(const container_totals& t) {
  nb::dict d;
  d["file_bytes"] = t.file_bytes;
  d["original_bytes"] = t.original_bytes;
  d["tensor_count"] = t.tensor_count;
  d["bundle_count"] = t.bundle_count;
  d["bf16_values"] = t.bf16_values;
  d["ratio"] = t.ratio();
  d["bits_per_bf16_value"] = t.bits_per_bf16_value();
  // Per value format present ("bf16", "fp16", "fp32", "bf16-in-fp32", "fp8-e4m3", "fp8-e5m2").
  nb::dict formats;
  for (unsigned i = 0; i < kValueFormatCount; ++i) {
    const auto f = static_cast<value_format>(i);
    const format_totals& ft = t.of(f);
    if (ft.bundle_count == 0) continue;
    nb::dict fd;
    fd["values"] = ft.values;
    fd["original_bytes"] = ft.original_bytes;
    fd["stored_bytes"] = ft.stored_bytes;
    fd["ratio"] = ft.ratio();
    fd["bits_per_value"] = ft.bits_per_value();
    fd["huffman_ideal_bits_per_value"] = ft.huffman_ideal_bits_per_value(f);
    formats[nb::str(std::string(to_string(f)).c_str())] = fd;
  }
  d["formats"] = formats;
  return d;
}

// A validated, memory-mapped .fzip (container_reader) with the accessors the Python layer needs.
class reader {
 public:
  reader(const std::string& path, bool verify_checksums) {
    reader_options options;
    options.verify_checksums = verify_checksums;
    result<container_reader> opened = [&] {
      nb::gil_scoped_release unlocked;
      return container_reader::open(path, options);
    }();
    if (!opened) throw_if_error(opened.error());
    reader_ = std::make_unique<container_reader>(std::move(*opened));
  }

  [[nodiscard]] const container_reader& get() const noexcept { return *reader_; }

  // (name, dtype, shape, bundle, bundle_offset, size_bytes), in the order of the data section.
  [[nodiscard]] std::vector<std::tuple<std::string, std::string, std::vector<std::uint64_t>,
                                       std::uint32_t, std::uint64_t, std::uint64_t>>
  tensors() const {
    std::vector<std::tuple<std::string, std::string, std::vector<std::uint64_t>, std::uint32_t,
                           std::uint64_t, std::uint64_t>>
        list;
    list.reserve(reader_->tensors().size());
    for (const container_tensor& t : reader_->tensors()) {
      list.emplace_back(t.name, std::string(safetensors::to_string(t.type)), t.shape, t.bundle,
                        t.bundle_offset, t.size_bytes());
    }
    return list;
  }

  // (whole, format, value_bytes, value_count, decoded_bytes) per bundle. whole: the bundle
  // decodes into one buffer of its values (any format, coded or stored verbatim) whose tensors
  // are views of it, every tensor whole. A raw bundle (format "") is not, nor is a bundle holding
  // a piece of a split tensor: their tensors are read one by one (read_tensor).
  [[nodiscard]] std::vector<
      std::tuple<bool, std::string, std::uint32_t, std::uint64_t, std::uint64_t>>
  bundles() const {
    std::vector<bool> has_piece(reader_->bundles().size(), false);
    for (const container_tensor& t : reader_->tensors()) {
      if (t.bundle_count <= 1) continue;
      for (std::uint32_t b = t.bundle; b < t.bundle + t.bundle_count; ++b) has_piece[b] = true;
    }
    std::vector<std::tuple<bool, std::string, std::uint32_t, std::uint64_t, std::uint64_t>> list;
    for (std::uint32_t i = 0; i < reader_->bundles().size(); ++i) {
      const container_bundle& b = reader_->bundles()[i];
      list.emplace_back(b.has_values() && !has_piece[i],
                        b.has_values() ? std::string(to_string(b.format)) : std::string(),
                        b.has_values() ? static_cast<std::uint32_t>(value_bytes(b.format)) : 1u,
                        b.value_count, b.decoded_bytes);
    }
    return list;
  }

  // The safetensors "__metadata__" pairs, in file order; None when the file has none.
  [[nodiscard]] nb::object metadata() const {
    const safetensors::header& h = reader_->original_header();
    if (!h.has_metadata) return nb::none();
    nb::dict d;
    for (const auto& [key, value] : h.metadata) d[nb::str(key.c_str())] = nb::str(value.c_str());
    return d;
  }

  // Bundle b's decoded values (any format: their little-endian bytes) into out, an array of
  // at least decoded_bytes bytes of any element type.
  void decode_bundle(std::uint32_t b, const host_array& out, unsigned threads) const {
    check_bundle(b);
    if (!reader_->bundles()[b].has_values())
      throw_if_error({errc::invalid_argument, reader_->name() + ": bundle " + std::to_string(b) +
                                                  " is stored raw, not float values"});
    error e;
    {
      nb::gil_scoped_release unlocked;
      e = reader_->decode_bundle(b, byte_span(out), decode_threads(threads));
    }
    throw_if_error(e);
  }

  // Tensor i (index into tensors()) copied into out, byte for byte as in the original file.
  void read_tensor(std::uint32_t i, const host_array& out, unsigned threads) const {
    if (i >= reader_->tensors().size())
      throw_if_error(
          {errc::invalid_argument, reader_->name() + ": no tensor " + std::to_string(i)});
    error e;
    {
      nb::gil_scoped_release unlocked;
      e = reader_->read_tensor(reader_->tensors()[i], byte_span(out), decode_threads(threads));
    }
    throw_if_error(e);
  }

  void verify_all(unsigned threads) const {
    error e;
    {
      nb::gil_scoped_release unlocked;
      e = reader_->verify_all(decode_threads(threads));
    }
    throw_if_error(e);
  }

  [[nodiscard]] nb::dict totals() const { return totals_dict(reader_->totals()); }

  void check_bundle(std::uint32_t b) const {
    if (b >= reader_->bundles().size())
      throw_if_error(
          {errc::invalid_argument, reader_->name() + ": no bundle " + std::to_string(b)});
  }

 private:
  std::unique_ptr<container_reader> reader_;
};

// Registers the device="cuda" functions (cuda_loader.cpp); does nothing in a build without
// the CUDA decoder, where the package reports that CUDA is unavailable.
void bind_cuda(nb::module_& m);

}  // namespace floatzip::python
