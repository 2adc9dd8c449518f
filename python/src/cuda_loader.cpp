// floatzip._floatzip, device="cuda": bundles of a .fzip decoded by floatzip's GPU kernel straight
// into torch CUDA tensors, on the caller's (torch's current) stream.
//
// The package allocates everything through torch (so the memory shows up in torch's caching
// allocator and is stream-ordered with the caller's work): one flat BF16 tensor per bundle that
// the kernel writes, one uint8 staging tensor per load that every bundle in turn is uploaded to,
// and one status word per bundle. The staging tensor holds a bundle's serialized bytes, its
// decode table, and is reused for the next bundle: the copies and launches are all on one stream,
// so bundle b + 1's upload is ordered after bundle b's kernel. Faults the kernel finds in the
// exponent streams land in the status words, read back once at the end of the load (the one
// synchronisation).
//
// device_bundle::upload (gpu.hpp) allocates device memory per bundle; a load reuses one buffer
// instead, so this builds the same device_bundle_view over the staging tensor with the helpers
// device_bundle::upload itself uses (detail/kernel_logic.hpp), and launches the public
// floatzip::decompress, which validates the view before the launch.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "floatzip/detail/kernel_logic.hpp"
#include "floatzip/gpu.hpp"
#include "floatzip_ext.hpp"

namespace floatzip::python {
namespace {

constexpr std::uint64_t kTableAlignment = 256;

std::uint64_t round_up(std::uint64_t n, std::uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

void check_cuda(cudaError_t status, const std::string& what) {
  if (status == cudaSuccess) return;
  (void)cudaGetLastError();
  throw_if_error({errc::cuda_error, what + ": " + cudaGetErrorString(status)});
}

void set_device(int device) { check_cuda(cudaSetDevice(device), "cudaSetDevice"); }

// Bytes of staging a load of this file needs: the largest BF16 bundle plus its decode table.
std::uint64_t staging_bytes(const reader& r) {
  std::uint64_t largest = 0;
  for (const container_bundle& b : r.get().bundles()) {
    if (b.kind != bundle_kind::bf16_huffman) continue;
    const std::uint64_t need =
        round_up(b.stored_bytes, kTableAlignment) + detail::decode_table_bytes(kGpuTableBitsLarge);
    if (need > largest) largest = need;
  }
  return largest;
}

// Uploads BF16 bundle b into the staging buffer and launches its decode into out.
void decode_bundle_cuda(const reader& r, std::uint32_t b, std::uintptr_t staging,
                        std::uint64_t staging_capacity, std::uintptr_t out,
                        std::uint64_t out_capacity, std::uintptr_t status, std::uintptr_t stream,
                        int device) {
  r.check_bundle(b);
  // Nothing below touches a Python object: the caller's reference keeps the reader alive.
  nb::gil_scoped_release unlocked;
  const container_reader& file = r.get();
  if (file.bundles()[b].kind != bundle_kind::bf16_huffman)
    throw_if_error({errc::invalid_argument,
                    file.name() + ": bundle " + std::to_string(b) + " is stored raw, not BF16"});
  const result<bundle_view> view = file.bundle(b);  // checks the stored checksum on first use
  if (!view) throw_if_error(view.error());
  const int table_bits = detail::gpu_table_bits(view->max_code_length());
  const result<std::vector<decode_entry>> table =
      detail::build_kernel_decode_table(*view, table_bits);
  if (!table) throw_if_error(table.error());
  const std::uint64_t table_offset = round_up(view->size_bytes(), kTableAlignment);
  const std::uint64_t table_bytes = detail::decode_table_bytes(table_bits);
  if (table_offset + table_bytes > staging_capacity)
    throw_if_error({errc::insufficient_space,
                    file.name() + ": bundle " + std::to_string(b) + " needs " +
                        std::to_string(table_offset + table_bytes) + " bytes of staging, got " +
                        std::to_string(staging_capacity)});
  set_device(device);
  auto* base = reinterpret_cast<std::byte*>(staging);
  auto* device_table = reinterpret_cast<decode_entry*>(base + table_offset);
  const auto cuda_stream = reinterpret_cast<cudaStream_t>(stream);
  // From pageable memory (the mapped file, the table vector) both copies have taken their source
  // when they return, so neither needs to outlive this call.
  check_cuda(cudaMemcpyAsync(base, view->bytes().data(), view->size_bytes(), cudaMemcpyHostToDevice,
                             cuda_stream),
             "upload of bundle " + std::to_string(b));
  check_cuda(cudaMemcpyAsync(device_table, table->data(), table_bytes, cudaMemcpyHostToDevice,
                             cuda_stream),
             "upload of the decode table of bundle " + std::to_string(b));
  const device_bundle_view device_view = detail::make_device_bundle_view(
      *view, base, device_table, table_bits, reinterpret_cast<unsigned long long*>(status));
  const error e = decompress(device_view, reinterpret_cast<std::uint16_t*>(out), out_capacity,
                             reinterpret_cast<gpu_stream>(stream));
  if (e) throw_if_error({e.code, file.name() + ": bundle " + std::to_string(b) + ": " + e.message});
}

// Copies tensor i of a raw bundle (its bytes as stored) to device memory at out.
void copy_raw_tensor_cuda(const reader& r, std::uint32_t i, std::uintptr_t out,
                          std::uint64_t out_bytes, std::uintptr_t stream, int device) {
  nb::gil_scoped_release unlocked;  // the caller's reference keeps the reader alive
  const container_reader& file = r.get();
  if (i >= file.tensors().size())
    throw_if_error({errc::invalid_argument, file.name() + ": no tensor " + std::to_string(i)});
  const container_tensor& t = file.tensors()[i];
  if (file.bundles()[t.bundle].kind != bundle_kind::raw)
    throw_if_error({errc::invalid_argument,
                    file.name() + ": tensor '" + t.name + "' is BF16: decode its bundle"});
  if (out_bytes != t.size_bytes())
    throw_if_error({errc::insufficient_space, file.name() + ": tensor '" + t.name + "' has " +
                                                  std::to_string(t.size_bytes()) + " bytes, got " +
                                                  std::to_string(out_bytes)});
  if (out_bytes == 0) return;
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
        nb::arg("staging"), nb::arg("staging_capacity"), nb::arg("out"), nb::arg("out_capacity"),
        nb::arg("status"), nb::arg("stream"), nb::arg("device"));
  m.def("cuda_copy_raw_tensor", &copy_raw_tensor_cuda, nb::arg("reader"), nb::arg("index"),
        nb::arg("out"), nb::arg("out_bytes"), nb::arg("stream"), nb::arg("device"));
  m.def("cuda_check_status", &check_status_cuda, nb::arg("reader"), nb::arg("status"),
        nb::arg("count"), nb::arg("stream"), nb::arg("device"));
}

}  // namespace floatzip::python
