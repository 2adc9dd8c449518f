// llama_generate: the forward pass of transformer.hpp on an NVIDIA GPU (see gpu_engine.hpp).
//
// Why FP32 scratch and cublasSgemv rather than cublasGemmEx on the BF16 weights: cuBLAS has no
// product of BF16 weights with FP32 activations. GemmEx with BF16 weights wants BF16 activations
// too, which would round the residual stream to 8 mantissa bits at every matrix - not the CPU
// path's arithmetic, and with an accumulation order and precision cuBLAS picks per GPU. So before
// a load's products run, its matrices are widened (exactly: BF16 is the top half of an FP32) into
// one FP32 scratch reused by every load, and cublasSgemv multiplies FP32 by FP32 with FP32 sums,
// as the CPU path does. The widening costs one extra pass over the weights per token; the
// compressed and uncompressed runs both pay it, so it does not enter the difference between them.
//
// Why the two runs agree bit for bit: they make the same kernel launches and the same cuBLAS calls
// with the same sizes, on FP32 scratch at the same offsets (so the same alignment, which cuBLAS
// may use to pick a kernel), on one handle bound to one stream with one fixed workspace. cuBLAS
// documents its routines as bit-wise reproducible on one GPU under those conditions; the
// exceptions are routines that use atomics (disallowed below: CUBLAS_ATOMICS_NOT_ALLOWED) and a
// handle whose workspace changes between calls (the workspace is set once, so
// CUBLAS_WORKSPACE_CONFIG, which only sizes the per-stream default workspace, plays no part).
// CUBLAS_PEDANTIC_MATH rules out TF32 or other reduced-precision paths, even when
// NVIDIA_TF32_OVERRIDE asks for them. Every reduction in the kernels below has a fixed order too.
// Against the CPU path the logits differ in the last bits: cuBLAS sums in another order and the
// GPU fuses multiply-adds.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "floatzip/gpu.hpp"
#include "gpu_engine.hpp"

namespace llama::gpu {
namespace {

using floatzip::errc;

// ---- errors ------------------------------------------------------------------------------------

floatzip::error cuda_failure(const char* call, cudaError_t status) {
  // Out of memory is a size problem the user can act on (a smaller model or --steps), not a fault.
  const errc code = status == cudaErrorMemoryAllocation ? errc::too_large : errc::cuda_error;
  return {code, std::string(call) + ": " + cudaGetErrorName(status) + " (" +
                    cudaGetErrorString(status) + ")"};
}

floatzip::error cublas_failure(const char* call, cublasStatus_t status) {
  const errc code = status == CUBLAS_STATUS_ALLOC_FAILED ? errc::too_large : errc::cuda_error;
  return {code, std::string(call) + ": " + cublasGetStatusName(status) + " (" +
                    cublasGetStatusString(status) + ")"};
}

#define LLAMA_CUDA(call)                                            \
  do {                                                              \
    if (const cudaError_t status_ = (call); status_ != cudaSuccess) \
      return cuda_failure(#call, status_);                          \
  } while (false)

#define LLAMA_CUBLAS(call)                                                       \
  do {                                                                           \
    if (const cublasStatus_t status_ = (call); status_ != CUBLAS_STATUS_SUCCESS) \
      return cublas_failure(#call, status_);                                     \
  } while (false)

// A <<<>>> launch returns nothing: a bad configuration or a GPU without code for the kernel is
// reported by the next cudaGetLastError, which also clears it.
#define LLAMA_LAUNCHED(kernel)                                                  \
  do {                                                                          \
    if (const cudaError_t status_ = cudaGetLastError(); status_ != cudaSuccess) \
      return cuda_failure("launch of " #kernel, status_);                       \
  } while (false)

floatzip::error with_context(const std::string& where, floatzip::error e) {
  if (e) e.message = where + ": " + e.message;
  return e;
}

// ---- kernels -----------------------------------------------------------------------------------

constexpr int kThreads = 256;  // per block, for every kernel below
constexpr unsigned kMaxBlocks = 4096;

unsigned blocks_for(std::uint64_t items) {
  return static_cast<unsigned>(
      std::clamp<std::uint64_t>((items + kThreads - 1) / kThreads, 1, kMaxBlocks));
}

__device__ __forceinline__ float widen_bf16(std::uint16_t bits) {
  return __uint_as_float(std::uint32_t{bits} << 16);
}

struct add_op {
  __device__ float operator()(float a, float b) const { return a + b; }
};
struct max_op {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

// Combines one value per thread of the block in a fixed tree (so the result does not depend on
// scheduling) and returns it to every thread. Every thread of the block must call it.
template <class Op>
__device__ float block_reduce(float value, float* shared, Op op) {
  shared[threadIdx.x] = value;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride /= 2) {
    if (static_cast<int>(threadIdx.x) < stride)
      shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + stride]);
    __syncthreads();
  }
  const float result = shared[0];
  __syncthreads();  // the caller may reuse `shared` at once
  return result;
}

// llama2.c's RMSNorm, one block: out = weight * (x / sqrt(mean(x^2) + eps)). out may be x: every
// read of x for the sum happens before the reduction's barriers.
__global__ void rmsnorm_kernel(float* out, const float* x, const std::uint16_t* weight, int size,
                               float eps) {
  __shared__ float partial[kThreads];
  float sum_squares = 0.0f;
  for (int j = static_cast<int>(threadIdx.x); j < size; j += kThreads) sum_squares += x[j] * x[j];
  const float total = block_reduce(sum_squares, partial, add_op{});
  const float scale = 1.0f / sqrtf(total / static_cast<float>(size) + eps);
  for (int j = static_cast<int>(threadIdx.x); j < size; j += kThreads)
    out[j] = widen_bf16(weight[j]) * (scale * x[j]);
}

// x = row `token` of the BF16 embedding table.
__global__ void embed_kernel(float* x, const std::uint16_t* table, int token, int dim) {
  const std::uint16_t* row = table + static_cast<std::uint64_t>(token) * dim;
  for (int j = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); j < dim;
       j += static_cast<int>(gridDim.x * blockDim.x))
    x[j] = widen_bf16(row[j]);
}

// A load's matrices, widened from BF16 into the FP32 scratch: segment blockIdx.y.
struct widen_segment {
  std::uint64_t source = 0;  // first BF16 value, from the load's base
  std::uint64_t target = 0;  // first float in the scratch
  std::uint64_t count = 0;
};
struct widen_plan {
  widen_segment segments[kBlockTensorCount];
  unsigned count = 0;
  std::uint64_t largest = 0;  // values in the largest segment
  std::uint64_t floats = 0;   // scratch the plan writes, alignment included
};

__global__ void widen_kernel(float* scratch, const std::uint16_t* load, widen_plan plan) {
  const widen_segment segment = plan.segments[blockIdx.y];
  for (std::uint64_t i = blockIdx.x * std::uint64_t{blockDim.x} + threadIdx.x; i < segment.count;
       i += std::uint64_t{gridDim.x} * blockDim.x)
    scratch[segment.target + i] = widen_bf16(load[segment.source + i]);
}

// Rotary embedding of the query heads and the key heads at `position`, one thread per pair of
// dimensions. The angles are those of transformer::run: position * frequency[turn] in float.
__global__ void rope_kernel(float* query, float* key, const float* frequency, int position,
                            int n_heads, int n_kv_heads, int head_size, bool split_halves) {
  const int half = head_size / 2;
  const int pairs = (n_heads + n_kv_heads) * half;
  for (int p = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); p < pairs;
       p += static_cast<int>(gridDim.x * blockDim.x)) {
    const int head = p / half;
    const int turn = p % half;
    float* vector = head < n_heads ? query + head * head_size : key + (head - n_heads) * head_size;
    const float angle = static_cast<float>(position) * frequency[turn];
    const float cosine = cosf(angle);
    const float sine = sinf(angle);
    // adjacent: pair (2i, 2i+1), llama2.c; split halves: pair (i, i + half), HF rotate_half.
    const int a = split_halves ? turn : 2 * turn;
    const int b = split_halves ? turn + half : 2 * turn + 1;
    const float a0 = vector[a];
    const float b0 = vector[b];
    vector[a] = a0 * cosine - b0 * sine;
    vector[b] = a0 * sine + b0 * cosine;
  }
}

// Grouped-query attention of one query head (block h) over positions 0..position of one layer's
// KV cache: scores, softmax, weighted sum of the values into out[h * head_size ..].
__global__ void attention_kernel(float* out, const float* query, const float* key_cache,
                                 const float* value_cache, float* scores, int position,
                                 int head_size, int kv_dim, int kv_group, int seq_len,
                                 float score_scale) {
  __shared__ float partial[kThreads];
  const int h = static_cast<int>(blockIdx.x);
  const float* q = query + h * head_size;
  const int kv_head_offset = (h / kv_group) * head_size;
  float* head_scores = scores + static_cast<std::uint64_t>(h) * seq_len;

  float local_max = -INFINITY;
  for (int t = static_cast<int>(threadIdx.x); t <= position; t += kThreads) {
    const float* k = key_cache + static_cast<std::uint64_t>(t) * kv_dim + kv_head_offset;
    float score = 0.0f;
    for (int i = 0; i < head_size; ++i) score += q[i] * k[i];
    score *= score_scale;
    head_scores[t] = score;
    local_max = fmaxf(local_max, score);
  }
  const float max_score = block_reduce(local_max, partial, max_op{});
  float local_sum = 0.0f;
  for (int t = static_cast<int>(threadIdx.x); t <= position; t += kThreads) {
    const float e = expf(head_scores[t] - max_score);
    head_scores[t] = e;
    local_sum += e;
  }
  const float sum = block_reduce(local_sum, partial, add_op{});
  for (int t = static_cast<int>(threadIdx.x); t <= position; t += kThreads) head_scores[t] /= sum;
  __syncthreads();  // every thread reads every weight below

  for (int i = static_cast<int>(threadIdx.x); i < head_size; i += kThreads) {
    float mixed = 0.0f;
    for (int t = 0; t <= position; ++t)
      mixed +=
          head_scores[t] * value_cache[static_cast<std::uint64_t>(t) * kv_dim + kv_head_offset + i];
    out[h * head_size + i] = mixed;
  }
}

// SwiGLU: gate = silu(gate) * up.
__global__ void swiglu_kernel(float* gate, const float* up, int size) {
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < size;
       i += static_cast<int>(gridDim.x * blockDim.x)) {
    const float g = gate[i];
    gate[i] = g * (1.0f / (1.0f + expf(-g))) * up[i];
  }
}

// The residual stream: x += delta.
__global__ void add_kernel(float* x, const float* delta, int size) {
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < size;
       i += static_cast<int>(gridDim.x * blockDim.x))
    x[i] += delta[i];
}

// ---- the engine's loads ------------------------------------------------------------------------

// Block tensors that are matrices (the rest are norm weights, read as BF16).
constexpr bool kBlockTensorIsMatrix[kBlockTensorCount] = {false, true, true, true, true,
                                                          false, true, true, true};
enum block_tensor : int { attention_norm, wq, wk, wv, wo, ffn_norm, w1, w3, w2 };

// Scratch offsets are multiples of 64 floats (256 bytes), the alignment cudaMalloc gives, so
// every matrix starts on the same alignment in both runs.
constexpr std::uint64_t kScratchAlignFloats = 64;
// Raw tensors of an uncompressed load start at multiples of 128 values (256 bytes) for the same
// reason.
constexpr std::uint64_t kRawAlignValues = 128;

std::uint64_t align_up(std::uint64_t n, std::uint64_t alignment) {
  return (n + alignment - 1) / alignment * alignment;
}

struct device_load {
  std::string name;
  std::vector<tensor_slot> tensors;
  std::vector<std::uint64_t> scratch_offsets;  // per tensor; meaningful for matrices only
  widen_plan widen;                            // the load's matrices
  std::optional<std::size_t> bundle;           // compressed
  const std::uint16_t* resident = nullptr;     // uncompressed: the load's values on the device
};

device_load plan_load(const host_load& load, const bool* is_matrix) {
  device_load plan;
  plan.name = load.name;
  plan.tensors = load.tensors;
  plan.bundle = load.bundle;
  plan.scratch_offsets.assign(load.tensors.size(), 0);
  std::uint64_t cursor = 0;
  for (std::size_t i = 0; i < load.tensors.size(); ++i) {
    if (!is_matrix[i]) continue;
    plan.scratch_offsets[i] = cursor;
    plan.widen.segments[plan.widen.count++] = {load.tensors[i].offset, cursor,
                                               load.tensors[i].count};
    plan.widen.largest = std::max(plan.widen.largest, load.tensors[i].count);
    cursor = align_up(cursor + load.tensors[i].count, kScratchAlignFloats);
  }
  plan.widen.floats = cursor;
  return plan;
}

// Checks a load against the sizes the shape asks for, before anything is uploaded.
floatzip::error check_load(const host_load& load, std::span<const std::uint64_t> expected,
                           const host_weights& weights) {
  const auto fail = [&](const std::string& what) {
    return floatzip::error{errc::bad_data, load.name + ": " + what};
  };
  if (load.tensors.size() != expected.size())
    return fail(std::to_string(load.tensors.size()) + " tensors, expected " +
                std::to_string(expected.size()));
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const tensor_slot& t = load.tensors[i];
    if (t.count != expected[i])
      return fail("tensor " + std::to_string(i) + " has " + std::to_string(t.count) +
                  " values, the shape asks for " + std::to_string(expected[i]));
    if (t.offset > load.value_count || t.count > load.value_count - t.offset)
      return fail("tensor " + std::to_string(i) + " lies outside the load's " +
                  std::to_string(load.value_count) + " values");
  }
  if (weights.compressed()) {
    if (!load.bundle || *load.bundle >= weights.bundles.size()) return fail("no bundle to decode");
    if (weights.bundles[*load.bundle].value_count() != load.value_count)
      return fail("its bundle decodes to " +
                  std::to_string(weights.bundles[*load.bundle].value_count()) +
                  " values, the load has " + std::to_string(load.value_count));
  } else {
    if (load.raw.size() != load.tensors.size()) return fail("no BF16 bytes for every tensor");
    for (std::size_t i = 0; i < load.raw.size(); ++i)
      if (load.raw[i].size() != load.tensors[i].count * 2)
        return fail("tensor " + std::to_string(i) + " has " + std::to_string(load.raw[i].size()) +
                    " bytes, not 2 per value");
  }
  return {};
}

}  // namespace

// ---- the engine --------------------------------------------------------------------------------

struct engine::impl {
  model_shape shape;
  run_stats stats;
  std::string device_name;
  engine::memory memory_use;
  std::size_t decode_buffer_allocations = 0;

  cudaStream_t stream = nullptr;
  cublasHandle_t cublas = nullptr;
  void* cublas_workspace = nullptr;

  // Weights.
  std::vector<floatzip::device_bundle> bundles;
  std::vector<bool> bundle_status_checked;
  std::uint16_t* decode_buffer = nullptr;  // compressed: the one reused buffer
  std::uint64_t decode_buffer_values = 0;
  std::optional<std::size_t> resident_bundle;  // the bundle the decode buffer holds now
  std::uint16_t* stored_values = nullptr;      // uncompressed: every load's BF16 values
  std::vector<device_load> blocks;
  device_load embedding, final_norm;
  std::optional<device_load> output_head;
  float* scratch = nullptr;  // FP32 widened matrices of one load

  // Activations (float32, as transformer.hpp).
  float *x = nullptr, *xb = nullptr, *xb2 = nullptr, *q = nullptr, *hb = nullptr, *hb2 = nullptr;
  float *scores = nullptr, *key_cache = nullptr, *value_cache = nullptr, *logits = nullptr;
  float* rope_frequency = nullptr;
  float* host_logits = nullptr;  // pinned

  // Two events per decompress launch of one pass: start, stop.
  std::vector<cudaEvent_t> decode_events;
  std::size_t decode_events_used = 0;

  impl() = default;
  impl(const impl&) = delete;
  impl& operator=(const impl&) = delete;

  ~impl() {
    // Releases what was created, in reverse; errors are ignored, as nothing could be done.
    if (stream != nullptr) (void)cudaStreamSynchronize(stream);
    if (cublas != nullptr) (void)cublasDestroy(cublas);
    bundles.clear();  // their destructors cudaFree
    for (void* p :
         {static_cast<void*>(decode_buffer), static_cast<void*>(stored_values),
          static_cast<void*>(scratch), static_cast<void*>(x), static_cast<void*>(xb),
          static_cast<void*>(xb2), static_cast<void*>(q), static_cast<void*>(hb),
          static_cast<void*>(hb2), static_cast<void*>(scores), static_cast<void*>(key_cache),
          static_cast<void*>(value_cache), static_cast<void*>(logits),
          static_cast<void*>(rope_frequency), cublas_workspace})
      if (p != nullptr) (void)cudaFree(p);
    if (host_logits != nullptr) (void)cudaFreeHost(host_logits);
    for (cudaEvent_t event : decode_events) (void)cudaEventDestroy(event);
    if (stream != nullptr) (void)cudaStreamDestroy(stream);
  }

  template <class T>
  floatzip::error allocate(T*& pointer, std::uint64_t count, std::uint64_t& accounted) {
    const std::uint64_t bytes = std::max<std::uint64_t>(count, 1) * sizeof(T);
    void* memory_block = nullptr;
    LLAMA_CUDA(cudaMalloc(&memory_block, bytes));
    pointer = static_cast<T*>(memory_block);
    accounted += bytes;
    return {};
  }

  floatzip::error setup(const model_shape& model, const host_weights& weights);
  floatzip::error upload(const host_weights& weights);
  floatzip::error run(int token, int position);

  // The load's BF16 values on the device: decoded into the decode buffer unless it holds them.
  floatzip::result<const std::uint16_t*> load(const device_load& which);
  floatzip::error widen(const device_load& which, const std::uint16_t* values);
  floatzip::error gemv(float* out, const device_load& which, std::size_t tensor, const float* in,
                       int rows, int cols);
  floatzip::error rmsnorm(float* out, const float* in, const std::uint16_t* weight);
};

floatzip::error engine::impl::setup(const model_shape& model, const host_weights& weights) {
  shape = model;
  if (floatzip::device_count() == 0)
    return {errc::invalid_argument, "no CUDA device (cudaGetDeviceCount found none)"};
  int device = 0;
  LLAMA_CUDA(cudaGetDevice(&device));
  cudaDeviceProp properties{};
  LLAMA_CUDA(cudaGetDeviceProperties(&properties, device));
  device_name = properties.name;

  // The shape, then every load against it.
  if (shape.dim <= 0 || shape.hidden_dim <= 0 || shape.n_layers <= 0 || shape.n_heads <= 0 ||
      shape.n_kv_heads <= 0 || shape.vocab_size <= 0 || shape.seq_len <= 0 ||
      shape.dim % shape.n_heads != 0 || shape.head_size() % 2 != 0 ||
      shape.n_heads % shape.n_kv_heads != 0)
    return {errc::invalid_argument, "the model shape is inconsistent"};
  const auto dim = std::uint64_t(shape.dim);
  const auto hidden = std::uint64_t(shape.hidden_dim);
  const auto q_dim = std::uint64_t(shape.n_heads) * std::uint64_t(shape.head_size());
  const auto kv_dim = std::uint64_t(shape.kv_dim());
  const auto vocab = std::uint64_t(shape.vocab_size);
  const std::uint64_t block_counts[kBlockTensorCount] = {dim,          q_dim * dim,  kv_dim * dim,
                                                         kv_dim * dim, dim * q_dim,  dim,
                                                         hidden * dim, hidden * dim, dim * hidden};
  if (weights.blocks.size() != std::size_t(shape.n_layers))
    return {errc::bad_data, std::to_string(weights.blocks.size()) + " blocks for " +
                                std::to_string(shape.n_layers) + " layers"};
  for (const host_load& block : weights.blocks)
    if (floatzip::error e = check_load(block, block_counts, weights)) return e;
  const std::uint64_t table_count[] = {vocab * dim};
  const std::uint64_t norm_count[] = {dim};
  if (floatzip::error e = check_load(weights.embedding, table_count, weights)) return e;
  if (floatzip::error e = check_load(weights.final_norm, norm_count, weights)) return e;
  if (weights.output_head)
    if (floatzip::error e = check_load(*weights.output_head, table_count, weights)) return e;

  for (const host_load& block : weights.blocks)
    blocks.push_back(plan_load(block, kBlockTensorIsMatrix));
  const bool matrix[] = {true};
  const bool not_matrix[] = {false};
  embedding = plan_load(weights.embedding, matrix);  // widened only when it is the tied head
  final_norm = plan_load(weights.final_norm, not_matrix);
  if (weights.output_head) output_head = plan_load(*weights.output_head, matrix);

  // One stream and one cuBLAS handle for every launch, in order.
  LLAMA_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  LLAMA_CUBLAS(cublasCreate(&cublas));
  LLAMA_CUBLAS(cublasSetStream(cublas, stream));
  LLAMA_CUBLAS(cublasSetMathMode(cublas, CUBLAS_PEDANTIC_MATH));
  LLAMA_CUBLAS(cublasSetAtomicsMode(cublas, CUBLAS_ATOMICS_NOT_ALLOWED));
  LLAMA_CUBLAS(cublasSetPointerMode(cublas, CUBLAS_POINTER_MODE_HOST));
  // A workspace of our own, set once: cuBLAS then allocates nothing while tokens run. 32 MiB is
  // what cuBLAS recommends for Hopper (4 MiB elsewhere).
  constexpr std::uint64_t kWorkspaceBytes = std::uint64_t{32} << 20;
  {
    std::uint8_t* workspace = nullptr;
    if (floatzip::error e = allocate(workspace, kWorkspaceBytes, memory_use.cublas_workspace))
      return e;
    cublas_workspace = workspace;
  }
  LLAMA_CUBLAS(cublasSetWorkspace(cublas, cublas_workspace, kWorkspaceBytes));

  if (floatzip::error e = upload(weights)) return e;

  // The scratch: the largest set of matrices one load widens (the embedding only when it is the
  // head).
  std::uint64_t scratch_floats = 0;
  for (const device_load& block : blocks)
    scratch_floats = std::max(scratch_floats, block.widen.floats);
  scratch_floats =
      std::max(scratch_floats, output_head ? output_head->widen.floats : embedding.widen.floats);
  if (floatzip::error e = allocate(scratch, scratch_floats, memory_use.fp32_scratch)) return e;

  // Activations and the KV cache, sized as transformer.hpp sizes them.
  const std::uint64_t cache = std::uint64_t(shape.n_layers) * std::uint64_t(shape.seq_len) * kv_dim;
  std::uint64_t& act = memory_use.activations;
  for (auto [pointer, count] :
       {std::pair{&x, dim},
        {&xb, std::max(dim, q_dim)},
        {&xb2, dim},
        {&q, q_dim},
        {&hb, hidden},
        {&hb2, hidden},
        {&scores, std::uint64_t(shape.n_heads) * std::uint64_t(shape.seq_len)},
        {&key_cache, cache},
        {&value_cache, cache},
        {&logits, vocab}})
    if (floatzip::error e = allocate(*pointer, count, act)) return e;
  // Zeroed so that no read of an unwritten slot could differ between two runs.
  LLAMA_CUDA(cudaMemsetAsync(key_cache, 0, cache * sizeof(float), stream));
  LLAMA_CUDA(cudaMemsetAsync(value_cache, 0, cache * sizeof(float), stream));

  // Rotary frequencies computed on the host exactly as transformer.hpp computes them.
  const std::size_t half = std::size_t(shape.head_size()) / 2;
  std::vector<float> frequency(half);
  for (std::size_t i = 0; i < half; ++i)
    frequency[i] = 1.0f / std::pow(shape.rope_theta, static_cast<float>(2 * i) /
                                                         static_cast<float>(shape.head_size()));
  if (floatzip::error e = allocate(rope_frequency, half, act)) return e;
  LLAMA_CUDA(cudaMemcpyAsync(rope_frequency, frequency.data(), half * sizeof(float),
                             cudaMemcpyHostToDevice, stream));

  void* pinned = nullptr;
  LLAMA_CUDA(cudaMallocHost(&pinned, vocab * sizeof(float)));
  host_logits = static_cast<float*>(pinned);

  // Per pass: at most one decode per block, the embedding, the final norm and the head.
  decode_events.resize(2 * (std::size_t(shape.n_layers) + 3), nullptr);
  for (cudaEvent_t& event : decode_events) LLAMA_CUDA(cudaEventCreate(&event));

  // The frequencies' host vector goes out of scope: wait for its copy.
  LLAMA_CUDA(cudaStreamSynchronize(stream));
  return {};
}

floatzip::error engine::impl::upload(const host_weights& weights) {
  if (weights.compressed()) {
    bundles.reserve(weights.bundles.size());
    for (std::size_t b = 0; b < weights.bundles.size(); ++b) {
      auto bundle = floatzip::device_bundle::upload(weights.bundles[b], stream);
      if (!bundle) return with_context("bundle " + std::to_string(b), bundle.error());
      memory_use.stored_weights += bundle->device_bytes();
      bundles.push_back(std::move(*bundle));
    }
    bundle_status_checked.assign(bundles.size(), false);
    // The one decode buffer: the largest bundle any load decodes.
    for (const host_load* load : {&weights.embedding, &weights.final_norm})
      decode_buffer_values = std::max(decode_buffer_values, load->value_count);
    if (weights.output_head)
      decode_buffer_values = std::max(decode_buffer_values, weights.output_head->value_count);
    for (const host_load& block : weights.blocks)
      decode_buffer_values = std::max(decode_buffer_values, block.value_count);
    if (floatzip::error e = allocate(decode_buffer, decode_buffer_values, memory_use.decode_buffer))
      return e;
    ++decode_buffer_allocations;
    return {};
  }

  // Uncompressed: every load's tensors in one allocation, each load at its own base.
  std::vector<std::pair<device_load*, const host_load*>> loads;
  for (std::size_t i = 0; i < blocks.size(); ++i)
    loads.emplace_back(&blocks[i], &weights.blocks[i]);
  loads.emplace_back(&embedding, &weights.embedding);
  loads.emplace_back(&final_norm, &weights.final_norm);
  if (output_head) loads.emplace_back(&*output_head, &*weights.output_head);
  std::uint64_t total = 0;
  std::vector<std::uint64_t> bases;
  for (const auto& [device, host] : loads) {
    bases.push_back(total);
    total = align_up(total + host->value_count, kRawAlignValues);
  }
  if (floatzip::error e = allocate(stored_values, total, memory_use.stored_weights)) return e;
  for (std::size_t l = 0; l < loads.size(); ++l) {
    const auto& [device, host] = loads[l];
    device->resident = stored_values + bases[l];
    for (std::size_t i = 0; i < host->tensors.size(); ++i)
      LLAMA_CUDA(cudaMemcpyAsync(stored_values + bases[l] + host->tensors[i].offset,
                                 host->raw[i].data(), host->raw[i].size(), cudaMemcpyHostToDevice,
                                 stream));
  }
  // The host bytes need only outlive create(): wait until the copies have taken them.
  LLAMA_CUDA(cudaStreamSynchronize(stream));
  return {};
}

floatzip::result<const std::uint16_t*> engine::impl::load(const device_load& which) {
  if (!which.bundle) return which.resident;
  if (resident_bundle == which.bundle) return decode_buffer;
  if (decode_events_used + 2 > decode_events.size())
    return floatzip::error{errc::invalid_argument, which.name + ": more decodes than planned"};
  cudaEvent_t start = decode_events[decode_events_used];
  cudaEvent_t stop = decode_events[decode_events_used + 1];
  decode_events_used += 2;
  LLAMA_CUDA(cudaEventRecord(start, stream));
  if (floatzip::error e =
          floatzip::decompress(bundles[*which.bundle], decode_buffer, decode_buffer_values, stream))
    return with_context(which.name, e);
  LLAMA_CUDA(cudaEventRecord(stop, stream));
  resident_bundle = which.bundle;
  ++stats.decode_launches;
  return static_cast<const std::uint16_t*>(decode_buffer);
}

floatzip::error engine::impl::widen(const device_load& which, const std::uint16_t* values) {
  if (which.widen.count == 0) return {};
  const dim3 grid(blocks_for(which.widen.largest), which.widen.count);
  widen_kernel<<<grid, kThreads, 0, stream>>>(scratch, values, which.widen);
  LLAMA_LAUNCHED(widen_kernel);
  return {};
}

// out[rows] = W x for the row-major W[rows, cols] widened in the scratch. cuBLAS is column-major:
// the same bytes are W^T as a cols x rows matrix with leading dimension cols, hence CUBLAS_OP_T.
floatzip::error engine::impl::gemv(float* out, const device_load& which, std::size_t tensor,
                                   const float* in, int rows, int cols) {
  const float one = 1.0f;
  const float zero = 0.0f;
  const float* matrix = scratch + which.scratch_offsets[tensor];
  if (const cublasStatus_t status =
          cublasSgemv(cublas, CUBLAS_OP_T, cols, rows, &one, matrix, cols, in, 1, &zero, out, 1);
      status != CUBLAS_STATUS_SUCCESS)
    return cublas_failure(
        (which.name + " tensor " + std::to_string(tensor) + ": cublasSgemv").c_str(), status);
  return {};
}

floatzip::error engine::impl::rmsnorm(float* out, const float* in, const std::uint16_t* weight) {
  rmsnorm_kernel<<<1, kThreads, 0, stream>>>(out, in, weight, shape.dim, shape.rms_norm_eps);
  LLAMA_LAUNCHED(rmsnorm_kernel);
  return {};
}

floatzip::error engine::impl::run(int token, int position) {
  const int dim = shape.dim;
  const int head_size = shape.head_size();
  const int kv_dim = shape.kv_dim();
  const int q_dim = shape.n_heads * head_size;
  const int hidden = shape.hidden_dim;
  const auto layer_cache = std::uint64_t(shape.seq_len) * std::uint64_t(kv_dim);
  decode_events_used = 0;

  // The embedding row. A tied head left the embedding in the decode buffer at the end of the
  // previous pass, so load() decodes it once per token, not twice.
  auto table = load(embedding);
  if (!table) return table.error();
  embed_kernel<<<blocks_for(std::uint64_t(dim)), kThreads, 0, stream>>>(
      x, *table + embedding.tensors[0].offset, token, dim);
  LLAMA_LAUNCHED(embed_kernel);

  for (int layer = 0; layer < shape.n_layers; ++layer) {
    const device_load& block = blocks[std::size_t(layer)];
    auto values = load(block);
    if (!values) return values.error();
    if (floatzip::error e = widen(block, *values)) return e;
    const auto norm = [&](int tensor) {
      return *values + block.tensors[std::size_t(tensor)].offset;
    };
    float* layer_keys = key_cache + std::uint64_t(layer) * layer_cache;
    float* layer_values = value_cache + std::uint64_t(layer) * layer_cache;
    float* key = layer_keys + std::uint64_t(position) * std::uint64_t(kv_dim);
    float* value = layer_values + std::uint64_t(position) * std::uint64_t(kv_dim);

    // Attention.
    if (floatzip::error e = rmsnorm(xb, x, norm(attention_norm))) return e;
    if (floatzip::error e = gemv(q, block, wq, xb, q_dim, dim)) return e;
    if (floatzip::error e = gemv(key, block, wk, xb, kv_dim, dim)) return e;
    if (floatzip::error e = gemv(value, block, wv, xb, kv_dim, dim)) return e;
    rope_kernel<<<blocks_for(std::uint64_t(shape.n_heads + shape.n_kv_heads) * (head_size / 2)),
                  kThreads, 0, stream>>>(q, key, rope_frequency, position, shape.n_heads,
                                         shape.n_kv_heads, head_size, shape.rope_split_halves);
    LLAMA_LAUNCHED(rope_kernel);
    attention_kernel<<<shape.n_heads, kThreads, 0, stream>>>(
        xb, q, layer_keys, layer_values, scores, position, head_size, kv_dim,
        shape.n_heads / shape.n_kv_heads, shape.seq_len,
        1.0f / std::sqrt(static_cast<float>(head_size)));
    LLAMA_LAUNCHED(attention_kernel);
    if (floatzip::error e = gemv(xb2, block, wo, xb, dim, q_dim)) return e;
    add_kernel<<<blocks_for(std::uint64_t(dim)), kThreads, 0, stream>>>(x, xb2, dim);
    LLAMA_LAUNCHED(add_kernel);

    // SwiGLU MLP: w2(silu(w1 x) * w3 x).
    if (floatzip::error e = rmsnorm(xb, x, norm(ffn_norm))) return e;
    if (floatzip::error e = gemv(hb, block, w1, xb, hidden, dim)) return e;
    if (floatzip::error e = gemv(hb2, block, w3, xb, hidden, dim)) return e;
    swiglu_kernel<<<blocks_for(std::uint64_t(hidden)), kThreads, 0, stream>>>(hb, hb2, hidden);
    LLAMA_LAUNCHED(swiglu_kernel);
    if (floatzip::error e = gemv(xb, block, w2, hb, dim, hidden)) return e;
    add_kernel<<<blocks_for(std::uint64_t(dim)), kThreads, 0, stream>>>(x, xb, dim);
    LLAMA_LAUNCHED(add_kernel);
  }

  auto norm_values = load(final_norm);
  if (!norm_values) return norm_values.error();
  if (floatzip::error e = rmsnorm(x, x, *norm_values + final_norm.tensors[0].offset)) return e;

  const device_load& head = output_head ? *output_head : embedding;
  auto head_values = load(head);
  if (!head_values) return head_values.error();
  if (floatzip::error e = widen(head, *head_values)) return e;
  if (floatzip::error e = gemv(logits, head, 0, x, shape.vocab_size, dim)) return e;

  LLAMA_CUDA(cudaMemcpyAsync(host_logits, logits, std::uint64_t(shape.vocab_size) * sizeof(float),
                             cudaMemcpyDeviceToHost, stream));
  LLAMA_CUDA(cudaStreamSynchronize(stream));
  return {};
}

}  // namespace llama::gpu

namespace llama::gpu {

engine::engine(std::unique_ptr<impl> state) : impl_(std::move(state)) {}
engine::~engine() = default;

floatzip::result<std::unique_ptr<engine>> engine::create(const model_shape& shape,
                                                         const host_weights& weights) {
  auto state = std::make_unique<impl>();
  if (floatzip::error e = state->setup(shape, weights)) return e;
  return std::unique_ptr<engine>(new engine(std::move(state)));
}

floatzip::result<std::span<const float>> engine::forward(int token, int position) {
  impl& s = *impl_;
  if (token < 0 || token >= s.shape.vocab_size)
    return floatzip::error{errc::invalid_argument, "forward: token " + std::to_string(token) +
                                                       " is outside the vocabulary"};
  if (position < 0 || position >= s.shape.seq_len)
    return floatzip::error{errc::invalid_argument, "forward: position " + std::to_string(position) +
                                                       " is outside the KV cache"};
  const auto start = std::chrono::steady_clock::now();
  if (floatzip::error e = s.run(token, position)) return e;
  s.stats.forward_seconds +=
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ++s.stats.forward_passes;

  // The stream has finished: the events can be read. Each bundle's decode status is read once,
  // after its first decode: later decodes run the same kernel over the same bytes.
  for (std::size_t i = 0; i < s.decode_events_used; i += 2) {
    float milliseconds = 0.0f;
    if (const cudaError_t status =
            cudaEventElapsedTime(&milliseconds, s.decode_events[i], s.decode_events[i + 1]);
        status != cudaSuccess)
      return cuda_failure("cudaEventElapsedTime", status);
    s.stats.decode_seconds += 1e-3 * double(milliseconds);
  }
  for (std::size_t b = 0; b < s.bundles.size(); ++b) {
    if (s.bundle_status_checked[b]) continue;
    if (floatzip::error e = s.bundles[b].check_decode_status(s.stream))
      return with_context("bundle " + std::to_string(b), e);
    s.bundle_status_checked[b] = true;
  }
  return std::span<const float>(s.host_logits, std::size_t(s.shape.vocab_size));
}

floatzip::error engine::warm_up(int token) {
  auto logits = forward(token, 0);
  if (!logits) return logits.error();
  impl_->stats = {};
  return {};
}

const model_shape& engine::config() const noexcept { return impl_->shape; }
const run_stats& engine::stats() const noexcept { return impl_->stats; }
bool engine::compressed() const noexcept { return !impl_->bundles.empty(); }
const std::string& engine::device_name() const noexcept { return impl_->device_name; }
const engine::memory& engine::device_memory() const noexcept { return impl_->memory_use; }
std::size_t engine::decode_buffer_allocations() const noexcept {
  return impl_->decode_buffer_allocations;
}

int device_count() noexcept { return floatzip::device_count(); }

}  // namespace llama::gpu
