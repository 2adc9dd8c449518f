// floatzip._floatzip, device="cuda": bundles of a .fzip decoded by floatzip's GPU kernel straight
// into torch CUDA tensors, on the caller's (torch's current) stream.
//
// The package allocates everything through torch (so the memory shows up in torch's caching
// allocator and is stream-ordered with the caller's work): one flat uint8 tensor per bundle that
// the kernel writes (its values, of the bundle's format; each tensor a typed view of it), one uint8
// staging tensor per load that every bundle in turn is uploaded to, and one status word per bundle.
// The staging tensor holds a bundle's serialized bytes, its decode table, and is reused for the
// next bundle: the copies and launches are all on one stream, so bundle b + 1's upload is ordered
// after bundle b's kernel. Faults the kernel finds in the exponent streams land in the status
// words, read back once at the end of the load (the one synchronisation).
//
// device_bundle::upload (gpu.hpp) allocates device memory per bundle; a load reuses one buffer
// instead, through gpu.hpp's stage_bundle, and launches the public floatzip::decompress, which
// validates every segment's view before its launch.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip_ext.hpp"

namespace floatzip::python {
namespace {

void check_cuda(cudaError_t status, const std::string& what) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();
  throw_if_error({errc::cuda_error, what + ": " + cudaGetErrorString(status)});
}

void set_device(int device) { check_cuda(cudaSetDevice(device), "cudaSetDevice"); }

// Bytes of staging a load of this file needs: what the largest coded bundle needs (gpu.hpp's
// staging_bytes: its bytes and every segment's decode tables).
std::uint64_t staging_bytes(const reader& r) {
  const container_reader& file = r.get();
  std::uint64_t largest = 0;
  for (std::uint32_t b = 0; b < file.bundles().size(); ++b) {
    if (file.bundles()[b].kind != bundle_kind::huffman) continue;
    const result<bundle_view> view = file.bundle(b);  // checks the stored checksum on first use
    if (!view) throw_if_error(view.error());
    largest = std::max(largest, floatzip::staging_bytes(*view));
  }
  return largest;
}

// Stages bundle b (values of any format) in the staging buffer and launches its decode into out,
// out_bytes bytes of device memory aligned to the format's value width.
void decode_bundle_cuda(const reader& r, std::uint32_t b, std::uintptr_t staging,
                        std::uint64_t staging_capacity, std::uintptr_t out, std::uint64_t out_bytes,
                        std::uintptr_t status, std::uintptr_t stream, int device) {
  r.check_bundle(b);
  // Nothing below touches a Python object: the caller's reference keeps the reader alive.
  nb::gil_scoped_release unlocked;
  const container_reader& file = r.get();
  const container_bundle& rec = file.bundles()[b];
  const std::string where = file.name() + ": bundle " + std::to_string(b) + ": ";
  if (rec.kind == bundle_kind::verbatim) {
    // Stored verbatim (coding would not have shrunk it): the stored bytes are the values.
    if (out_bytes < rec.decoded_bytes)
      throw_if_error(
          {errc::insufficient_space, where + "needs " + std::to_string(rec.decoded_bytes) +
                                         " bytes of output, got " + std::to_string(out_bytes)});
    const result<std::span<const std::byte>> bytes = file.bundle_bytes(b);  // checksum checked
    if (!bytes) throw_if_error(bytes.error());
    set_device(device);
    check_cuda(cudaMemcpyAsync(reinterpret_cast<void*>(out), bytes->data(), bytes->size(),
                               cudaMemcpyHostToDevice, reinterpret_cast<cudaStream_t>(stream)),
               "upload of verbatim bundle " + std::to_string(b));
    return;
  }
  if (rec.kind != bundle_kind::huffman)
    throw_if_error({errc::invalid_argument, where + "stored raw, not float values"});
  const result<bundle_view> view = file.bundle(b);  // checks the stored checksum on first use
  if (!view) throw_if_error(view.error());
  set_device(device);
  const auto cuda_stream = reinterpret_cast<gpu_stream>(stream);
  // From pageable memory (the mapped file) the copies have taken their source when
  // stage_bundle returns.
  const result<staged_bundle> staged =
      stage_bundle(*view, reinterpret_cast<void*>(staging), staging_capacity,
                   reinterpret_cast<unsigned long long*>(status), cuda_stream);
  if (!staged) {
    const error e = staged.error();
    throw_if_error({e.code, where + e.message});
  }
  // The byte overload checks out_bytes against the bundle's values of its format.
  const error e = decompress(*staged, reinterpret_cast<std::byte*>(out), out_bytes, cuda_stream);
  if (e) throw_if_error({e.code, where + e.message});
}

// Copies tensor i of a raw bundle (its bytes as stored) to device memory at out.
void copy_raw_tensor_cuda(const reader& r, std::uint32_t i, std::uintptr_t out,
                          std::uint64_t out_bytes, std::uintptr_t stream, int device) {
  nb::gil_scoped_release unlocked;  // the caller's reference keeps the reader alive
  const container_reader& file = r.get();
  if (i >= file.tensors().size())
    throw_if_error({errc::invalid_argument, file.name() + ": no tensor " + std::to_string(i)});
  const container_tensor& t = file.tensors()[i];
  if (out_bytes != t.size_bytes())
    throw_if_error({errc::insufficient_space, file.name() + ": tensor '" + t.name + "' has " +
                                                  std::to_string(t.size_bytes()) + " bytes, got " +
                                                  std::to_string(out_bytes)});
  if (out_bytes == 0) return;
  if (file.bundles()[t.bundle].kind != bundle_kind::raw) {
    // A float tensor split across bundles (larger than a bundle may be): decoded on the host,
    // piece by piece, then copied (synchronously: the host buffer goes away).
    std::vector<std::byte> host(out_bytes);
    throw_if_error(file.read_tensor(t, host));
    set_device(device);
    check_cuda(
        cudaMemcpy(reinterpret_cast<void*>(out), host.data(), out_bytes, cudaMemcpyHostToDevice),
        "upload of tensor '" + t.name + "'");
    return;
  }
  const result<std::span<const std::byte>> bytes = file.bundle_bytes(t.bundle);
  if (!bytes) throw_if_error(bytes.error());
  set_device(device);
  check_cuda(
      cudaMemcpyAsync(reinterpret_cast<void*>(out), bytes->data() + t.bundle_offset, out_bytes,
                      cudaMemcpyHostToDevice, reinterpret_cast<cudaStream_t>(stream)),
      "upload of tensor '" + t.name + "'");
}

// Waits for the stream and reports the first bundle whose kernel found a corrupt sync group.
void check_status_cuda(const reader& r, std::uintptr_t status, std::uint32_t count,
                       std::uintptr_t stream, int device) {
  std::vector<unsigned long long> records(count);
  {
    nb::gil_scoped_release unlocked;
    set_device(device);
    const auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
    check_cuda(
        cudaMemcpyAsync(records.data(), reinterpret_cast<const void*>(status),
                        count * sizeof(unsigned long long), cudaMemcpyDeviceToHost, cuda_stream),
        "reading the decode status");
    check_cuda(cudaStreamSynchronize(cuda_stream), "waiting for the decode");
  }
  for (std::uint32_t b = 0; b < count; ++b) {
    if (records[b] == detail::kNoFault) continue;
    const error e = detail::describe_fault(records[b]);
    throw_if_error({e.code, r.get().name() + ": bundle " + std::to_string(b) + ": " + e.message});
  }
}

}  // namespace

void bind_cuda(nb::module_& m) {
  m.def("cuda_device_count", [] { return device_count(); });
  m.def("cuda_staging_bytes", &staging_bytes, nb::arg("reader"));
  m.def("cuda_decode_bundle", &decode_bundle_cuda, nb::arg("reader"), nb::arg("bundle"),
        nb::arg("staging"), nb::arg("staging_capacity"), nb::arg("out"), nb::arg("out_bytes"),
        nb::arg("status"), nb::arg("stream"), nb::arg("device"));
  m.def("cuda_copy_raw_tensor", &copy_raw_tensor_cuda, nb::arg("reader"), nb::arg("index"),
        nb::arg("out"), nb::arg("out_bytes"), nb::arg("stream"), nb::arg("device"));
  m.def("cuda_check_status", &check_status_cuda, nb::arg("reader"), nb::arg("status"),
        nb::arg("count"), nb::arg("stream"), nb::arg("device"));
}

}  // namespace floatzip::python
