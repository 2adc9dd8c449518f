// Probe (issue 12): could an AVX-512 decoder that runs 16 Huffman bit streams in lockstep, one
// gather of 16 table entries per step, make FP8 decode fast? An experiment, not the library's
// decoder: it uses its own stream layout (below) and is not used by floatzip.
//
// What it does, per symbol distribution:
//   1. Draws N synthetic symbols: FP8 E4M3 weights (Student-t values rounded to E4M3 with a
//      per-tensor scale, as tests/float_conversions.hpp quantises FP8 checkpoints) and BF16-like
//      exponent bytes (of Gaussian weights).
//   2. Builds the length-limited canonical code with floatzip's own builder (build_code_lengths,
//      make_canonical_code, build_decode_table; limit 12, as the encoder's default) and writes
//      the symbols as 16 (32, 48) independent MSB-first streams: symbols [i*N/S, (i+1)*N/S) in
//      stream i, each stream followed by kStreamPaddingBytes zero bytes so 8-byte window loads
//      stay inside the buffer (the bundle's padding rule, bitstream.hpp). N is not a multiple of
//      S * 64, so the vector decoders' scalar tails run too.
//   3. Measures what one look-up costs on this CPU: a 16-lane gather from the code's table,
//      back to back and dependent, against 16 scalar loads.
//   4. Decodes them with (a) a plain scalar decoder, 4 streams interleaved, one symbol per
//      look-up of the library's 12-bit table (the in-run baseline); (b) AVX-512 decoders of 1-3
//      groups of 16 streams in lockstep, which look symbols up either with a gather from the
//      table or arithmetically in registers (canonical code), and refill either with gathers
//      or with scalar loads; and (c) for reference, floatzip's own CPU decoder (one thread) on
//      a bundle of the same values compressed by floatzip itself (multi-symbol tables, its own
//      layout and code).
//   5. Checks every output byte against the input (any mismatch: exit 1) and prints G symbols/s
//      (median of the runs' thread CPU times, runs interleaved) and the ratios to (a).
//
// The AVX-512 code sits in functions compiled for AVX-512 (target attribute) and runs only where
// the CPU has it; elsewhere the probe says so and reports (a) and (c) only.
#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "float_conversions.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/detail/bitstream.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/huffman.hpp"

// FLOATZIP_PROBE_NO_SIMD builds the portable part only, as on other CPUs (to check that it
// compiles).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(FLOATZIP_PROBE_NO_SIMD)
#define FLOATZIP_PROBE_X86 1
// GCC 12's AVX-512 intrinsics initialise their "undefined" operands with themselves (__Y = __Y),
// which -W(maybe-)uninitialized reports at every use (GCC bug 105593); the warnings are silenced
// for the intrinsics' headers and the vector code below only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>
#else
#define FLOATZIP_PROBE_X86 0
#endif

namespace {

double thread_cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

constexpr int kStreams = 16;    // of the probe's layout for the scalar decoder, and per zmm group
constexpr int kMaxGroups = 3;   // the vector decoder runs 1-3 groups of 16 streams interleaved
constexpr int kCodeLimit = 12;  // the encoder's default max_code_length; also the table's bits
constexpr int kRuns = 9;

// ---- inputs ------------------------------------------------------------------------------------

// FP8 E4M3 weights: Student-t (nu = 5: heavier tails than a Gaussian, as trained weights have),
// quantised per tensor of 1 Mi values with the scale that maps the tensor's largest magnitude to
// 448, as FP8 checkpoints store them.
std::vector<std::uint8_t> fp8_e4m3_symbols(std::size_t n, std::mt19937_64& rng) {
  std::student_t_distribution<float> dist(5.0f);
  std::vector<std::uint8_t> out;
  out.reserve(n);
  constexpr std::size_t kTensor = std::size_t{1} << 20;
  std::vector<float> tensor;
  for (std::size_t begin = 0; begin < n; begin += kTensor) {
    const std::size_t count = std::min(kTensor, n - begin);
    tensor.resize(count);
    for (float& v : tensor) v = 0.02f * dist(rng);
    const auto q = floatzip::test::quantise_fp8(tensor, floatzip::test::fp8_kind::e4m3);
    out.insert(out.end(), q.begin(), q.end());
  }
  return out;
}

// BF16 weights of a Gaussian (sigma 0.02): the exponent byte is BF16's coded symbol.
std::vector<std::uint16_t> bf16_values(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<std::uint16_t> out(n);
  for (auto& v : out) v = static_cast<std::uint16_t>(std::bit_cast<std::uint32_t>(dist(rng)) >> 16);
  return out;
}

// ---- the probe's 16-stream layout --------------------------------------------------------------

struct probe_streams {
  std::vector<std::uint8_t> bytes;        // all streams, each followed by padding
  int count = 0;                          // streams
  std::vector<std::uint32_t> start_byte;  // of stream i in `bytes`
  std::vector<std::uint64_t> first_symbol;
  std::vector<std::uint64_t> symbol_count;
  std::uint64_t total_bits = 0;
};

probe_streams encode_streams(std::span<const std::uint8_t> symbols,
                             const floatzip::canonical_code& code, int stream_count) {
  probe_streams s;
  const std::size_t n = symbols.size();
  s.count = stream_count;
  s.start_byte.resize(stream_count);
  s.first_symbol.resize(stream_count);
  s.symbol_count.resize(stream_count);
  // Worst case: every symbol kCodeLimit bits, plus padding and the writer's 8-byte stores.
  s.bytes.assign(n * kCodeLimit / 8 + stream_count * (floatzip::kStreamPaddingBytes + 16) + 64, 0);
  std::size_t at = 0;
  for (int i = 0; i < stream_count; ++i) {
    s.first_symbol[i] = n * static_cast<std::uint64_t>(i) / stream_count;
    s.symbol_count[i] = n * static_cast<std::uint64_t>(i + 1) / stream_count - s.first_symbol[i];
    s.start_byte[i] = static_cast<std::uint32_t>(at);
    floatzip::detail::bit_writer writer(s.bytes.data() + at, 0);
    const std::uint8_t* in = symbols.data() + s.first_symbol[i];
    for (std::uint64_t k = 0; k < s.symbol_count[i]; ++k) {
      const unsigned length = code.length[in[k]];
      writer.put_left_aligned(std::uint64_t{code.code[in[k]]} << (64 - length), length);
      s.total_bits += length;
      if (k % 4 == 3) writer.flush();  // 4 codewords of <= 12 bits after <= 7 pending: <= 55
    }
    const std::uint8_t* end = writer.finish();
    at = static_cast<std::size_t>(end - s.bytes.data()) + floatzip::kStreamPaddingBytes;
    at = (at + 7) & ~std::size_t{7};
    std::fill(s.bytes.data() + (end - s.bytes.data()), s.bytes.data() + at + 8, std::uint8_t{0});
  }
  s.bytes.resize(at + 8);
  return s;
}

// ---- (a) scalar baseline: 4 streams interleaved, one symbol per look-up -------------------------

// Decodes `count` symbols of one stream from bit `pos` on (the tails of the vector decoder too).
void decode_one_stream(const std::uint8_t* stream, std::uint64_t pos, std::uint64_t count,
                       const floatzip::decode_entry* table, std::uint8_t* out) {
  for (std::uint64_t k = 0; k < count; ++k) {
    const std::uint64_t window = floatzip::detail::stream_window(stream, pos);
    const floatzip::decode_entry e = table[window >> (64 - kCodeLimit)];
    out[k] = floatzip::entry_symbol(e);
    pos += floatzip::entry_length(e);
  }
}

void decode_scalar4(const probe_streams& s, const floatzip::decode_entry* table,
                    std::uint8_t* out) {
  for (int g = 0; g < s.count; g += 4) {
    std::uint64_t pos[4] = {0, 0, 0, 0};
    std::uint64_t common = s.symbol_count[g];
    for (int l = 1; l < 4; ++l) common = std::min(common, s.symbol_count[g + l]);
    const std::uint64_t rounds = common / 4;
    // A window holds >= 57 bits: four codewords of <= 12 bits per refill.
    for (std::uint64_t r = 0; r < rounds; ++r) {
      std::uint64_t window[4];
      for (int l = 0; l < 4; ++l) {
        window[l] = floatzip::detail::stream_window(s.bytes.data() + s.start_byte[g + l], pos[l]);
      }
      for (int j = 0; j < 4; ++j) {
        for (int l = 0; l < 4; ++l) {
          const floatzip::decode_entry e = table[window[l] >> (64 - kCodeLimit)];
          out[s.first_symbol[g + l] + 4 * r + j] = floatzip::entry_symbol(e);
          const unsigned length = floatzip::entry_length(e);
          window[l] <<= length;
          pos[l] += length;
        }
      }
    }
    for (int l = 0; l < 4; ++l) {
      const std::uint64_t done = rounds * 4;
      decode_one_stream(s.bytes.data() + s.start_byte[g + l], pos[l], s.symbol_count[g + l] - done,
                        table, out + s.first_symbol[g + l] + done);
    }
  }
}

// The canonical code as the in-register decoder below reads it (see there).
struct canonical_decoder {
  int min_length = 0;
  int max_length = 0;
  std::array<std::uint32_t, 16> limit{};   // by length; limit[max_length..] unused
  std::array<std::int32_t, 16> offset{};   // rank of the first code of each length minus that code
  std::array<std::uint8_t, 256> sorted{};  // symbols by (length, value)
};

canonical_decoder make_canonical_decoder(const floatzip::canonical_code& code) {
  canonical_decoder d;
  std::array<int, 16> count{};
  std::array<std::uint32_t, 16> first{};
  for (int s = 0; s < floatzip::kSymbolCount; ++s) {
    if (code.length[s] != 0) ++count[code.length[s]];
  }
  int rank = 0;
  d.min_length = 0;
  for (int l = 1; l <= kCodeLimit; ++l) {
    if (count[l] != 0 && d.min_length == 0) d.min_length = l;
    first[l] = 0xFFFFFFFFu;
    for (int s = 0; s < floatzip::kSymbolCount; ++s) {
      if (code.length[s] == l) {
        first[l] = std::min<std::uint32_t>(first[l], code.code[s]);
        d.sorted[static_cast<std::size_t>(rank++)] = static_cast<std::uint8_t>(s);
      }
    }
    if (count[l] == 0) first[l] = l == 1 ? 0 : (first[l - 1] + count[l - 1]) << 1;
    d.limit[l] = (first[l] + static_cast<std::uint32_t>(count[l])) << (kCodeLimit - l);
    d.offset[l] = (rank - count[l]) - static_cast<std::int32_t>(first[l]);
  }
  d.max_length = code.max_length;
  return d;
}

// ---- (b) AVX-512: 16 streams in lockstep --------------------------------------------------------
//
// Lane l of every vector is stream l. Per refill (every 4 symbols): each lane's bit position pos
// (32 bits, relative to its stream) gives a byte address start + pos / 8; two gathers fetch the 16
// 8-byte words, a byte shuffle makes them big-endian numbers, and a variable shift by pos % 8
// left-aligns the next >= 57 stream bits in two zmm registers (lanes 0-7, 8-15). Per symbol: the
// high dwords of both registers are packed into one register of 16 dwords (one two-source
// permute), shifted down to the 12-bit index, and one gather fetches 16 table entries (the
// library's entries widened to 32 bits); each lane's window is shifted left by its codeword
// length (vpsllvq), and the symbol is or-ed into a per-lane dword (4 symbols = one dword).
// Output: each round's 16 dwords go to a 16 x 16 staging block (16 rounds = 64 symbols a lane);
// a gather per lane reads its column back as 64 contiguous bytes, stored with one unaligned
// store. Lanes then continue with the scalar tail decoder from their own bit positions.
#if FLOATZIP_PROBE_X86
#define FLOATZIP_PROBE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vbmi,bmi2")))

template <int Groups>
FLOATZIP_PROBE_AVX512 void decode_avx512(const probe_streams& s, const std::uint32_t* table32,
                                         const floatzip::decode_entry* table, std::uint8_t* out) {
  std::uint64_t common = s.symbol_count[0];
  for (int l = 1; l < s.count; ++l) common = std::min(common, s.symbol_count[l]);
  const std::uint64_t blocks = common / 64;

  const auto* base = reinterpret_cast<const long long*>(s.bytes.data());
  // Byte reversal within each 64-bit lane.
  const __m512i bswap = _mm512_set_epi8(
      56, 57, 58, 59, 60, 61, 62, 63, 48, 49, 50, 51, 52, 53, 54, 55, 40, 41, 42, 43, 44, 45, 46,
      47, 32, 33, 34, 35, 36, 37, 38, 39, 24, 25, 26, 27, 28, 29, 30, 31, 16, 17, 18, 19, 20, 21,
      22, 23, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  // High dword of each 64-bit lane of (a, b): a's 8 then b's 8.
  const __m512i high_dwords =
      _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m512i column =
      _mm512_set_epi32(240, 224, 208, 192, 176, 160, 144, 128, 112, 96, 80, 64, 48, 32, 16, 0);
  const __m512i symbol_mask = _mm512_set1_epi32(0xFF);
  const __m512i seven = _mm512_set1_epi32(7);
  alignas(64) std::uint32_t staging[Groups][16 * 16];

  __m512i start[Groups], pos[Groups];
  for (int g = 0; g < Groups; ++g) {
    start[g] = _mm512_loadu_si512(s.start_byte.data() + 16 * g);
    pos[g] = _mm512_setzero_si512();
  }
  for (std::uint64_t b = 0; b < blocks; ++b) {
    for (int r = 0; r < 16; ++r) {
      __m512i lo[Groups], hi[Groups], symbols[Groups], consumed[Groups];
#pragma GCC unroll 3
      for (int g = 0; g < Groups; ++g) {
        const __m512i byte_at = _mm512_add_epi32(start[g], _mm512_srli_epi32(pos[g], 3));
        const __m512i bit_in_byte = _mm512_and_si512(pos[g], seven);
        lo[g] = _mm512_i32gather_epi64(_mm512_castsi512_si256(byte_at), base, 1);
        hi[g] = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(byte_at, 1), base, 1);
        lo[g] = _mm512_sllv_epi64(_mm512_shuffle_epi8(lo[g], bswap),
                                  _mm512_cvtepu32_epi64(_mm512_castsi512_si256(bit_in_byte)));
        hi[g] = _mm512_sllv_epi64(_mm512_shuffle_epi8(hi[g], bswap),
                                  _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(bit_in_byte, 1)));
        symbols[g] = _mm512_setzero_si512();
        consumed[g] = _mm512_setzero_si512();
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 3
        for (int g = 0; g < Groups; ++g) {
          const __m512i top = _mm512_permutex2var_epi32(lo[g], high_dwords, hi[g]);
          const __m512i index = _mm512_srli_epi32(top, 32 - kCodeLimit);
          const __m512i entry = _mm512_i32gather_epi32(index, table32, 4);
          const __m512i length = _mm512_srli_epi32(entry, 8);
          symbols[g] = _mm512_or_si512(
              symbols[g],
              _mm512_sll_epi32(_mm512_and_si512(entry, symbol_mask), _mm_cvtsi32_si128(8 * j)));
          consumed[g] = _mm512_add_epi32(consumed[g], length);
          lo[g] = _mm512_sllv_epi64(lo[g], _mm512_cvtepu32_epi64(_mm512_castsi512_si256(length)));
          hi[g] =
              _mm512_sllv_epi64(hi[g], _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(length, 1)));
        }
      }
#pragma GCC unroll 3
      for (int g = 0; g < Groups; ++g) {
        pos[g] = _mm512_add_epi32(pos[g], consumed[g]);
        _mm512_store_si512(staging[g] + 16 * r, symbols[g]);
      }
    }
    for (int g = 0; g < Groups; ++g) {
      for (int l = 0; l < 16; ++l) {
        const __m512i lane =
            _mm512_i32gather_epi32(_mm512_add_epi32(column, _mm512_set1_epi32(l)), staging[g], 4);
        _mm512_storeu_si512(out + s.first_symbol[16 * g + l] + 64 * b, lane);
      }
    }
  }
  const std::uint64_t done = blocks * 64;
  for (int g = 0; g < Groups; ++g) {
    alignas(64) std::uint32_t lane_pos[16];
    _mm512_store_si512(lane_pos, pos[g]);
    for (int l = 0; l < 16; ++l) {
      const int i = 16 * g + l;
      decode_one_stream(s.bytes.data() + s.start_byte[i], lane_pos[l], s.symbol_count[i] - done,
                        table, out + s.first_symbol[i] + done);
    }
  }
}
// The same lockstep loop without the table gather: the canonical code is decoded arithmetically
// in registers. Canonical codewords of length l are consecutive, so with `limit[l]` = (first
// code of length l + count of length l) << (12 - l), left-aligned to 12 bits and nondecreasing in
// l, a 12-bit index's codeword length is min_length plus the number of l in [min_length,
// max_length) with index >= limit[l] (one compare and one masked add each); its rank among the
// symbols sorted by (length, value) is offset[length] + (index >> (12 - length)) (a 16-entry
// permute and a variable shift); the symbol is sorted[rank] (two 128-byte two-source byte
// permutes and a blend on bit 7). The refill is the gathers above, or 16 scalar 8-byte loads
// through a stack buffer, or (refill::none, a cost ceiling and not a decoder: its output is
// wrong and is not checked) no refill at all: every round restarts from the streams' first
// windows, so the loop does all the symbol work of a decode and none of the refill work.
enum class refill { gather, scalar, none };
template <int Groups, refill Refill>
FLOATZIP_PROBE_AVX512 void decode_avx512_canonical(const probe_streams& s,
                                                   const canonical_decoder& d,
                                                   const floatzip::decode_entry* table,
                                                   std::uint8_t* out) {
  std::uint64_t common = s.symbol_count[0];
  for (int l = 1; l < s.count; ++l) common = std::min(common, s.symbol_count[l]);
  const std::uint64_t blocks = common / 64;

  const auto* base = reinterpret_cast<const long long*>(s.bytes.data());
  const __m512i bswap = _mm512_set_epi8(
      56, 57, 58, 59, 60, 61, 62, 63, 48, 49, 50, 51, 52, 53, 54, 55, 40, 41, 42, 43, 44, 45, 46,
      47, 32, 33, 34, 35, 36, 37, 38, 39, 24, 25, 26, 27, 28, 29, 30, 31, 16, 17, 18, 19, 20, 21,
      22, 23, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  const __m512i high_dwords =
      _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  const __m512i column =
      _mm512_set_epi32(240, 224, 208, 192, 176, 160, 144, 128, 112, 96, 80, 64, 48, 32, 16, 0);
  const __m512i symbol_mask = _mm512_set1_epi32(0xFF);
  const __m512i seven = _mm512_set1_epi32(7);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i twelve = _mm512_set1_epi32(kCodeLimit);
  const __m512i high_bit = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i min_length = _mm512_set1_epi32(d.min_length);
  const __m512i offset = _mm512_loadu_si512(d.offset.data());
  const __m512i sorted0 = _mm512_loadu_si512(d.sorted.data());
  const __m512i sorted1 = _mm512_loadu_si512(d.sorted.data() + 64);
  const __m512i sorted2 = _mm512_loadu_si512(d.sorted.data() + 128);
  const __m512i sorted3 = _mm512_loadu_si512(d.sorted.data() + 192);
  __m512i limit[16];
  for (int l = 0; l < 16; ++l) limit[l] = _mm512_set1_epi32(static_cast<int>(d.limit[l]));
  alignas(64) std::uint32_t staging[Groups][16 * 16];
  alignas(64) std::uint32_t pos_spill[Groups][16];
  alignas(64) std::uint64_t window_spill[Groups][16];

  __m512i start[Groups], pos[Groups], first_lo[Groups], first_hi[Groups];
  for (int g = 0; g < Groups; ++g) {
    start[g] = _mm512_loadu_si512(s.start_byte.data() + 16 * g);
    pos[g] = _mm512_setzero_si512();
    for (int l = 0; l < 16; ++l) {
      window_spill[g][l] =
          floatzip::detail::stream_window(s.bytes.data() + s.start_byte[16 * g + l], 0);
    }
    first_lo[g] = _mm512_load_si512(window_spill[g]);
    first_hi[g] = _mm512_load_si512(window_spill[g] + 8);
  }
  for (std::uint64_t b = 0; b < blocks; ++b) {
    for (int r = 0; r < 16; ++r) {
      __m512i lo[Groups], hi[Groups], symbols[Groups], consumed[Groups];
      if constexpr (Refill == refill::none) {
        for (int g = 0; g < Groups; ++g) {
          lo[g] = first_lo[g];
          hi[g] = first_hi[g];
        }
      } else if constexpr (Refill == refill::scalar) {
        for (int g = 0; g < Groups; ++g) _mm512_store_si512(pos_spill[g], pos[g]);
        for (int g = 0; g < Groups; ++g) {
          for (int l = 0; l < 16; ++l) {
            window_spill[g][l] = floatzip::detail::stream_window(
                s.bytes.data() + s.start_byte[16 * g + l], pos_spill[g][l]);
          }
          lo[g] = _mm512_load_si512(window_spill[g]);
          hi[g] = _mm512_load_si512(window_spill[g] + 8);
        }
      } else {
#pragma GCC unroll 3
        for (int g = 0; g < Groups; ++g) {
          const __m512i byte_at = _mm512_add_epi32(start[g], _mm512_srli_epi32(pos[g], 3));
          const __m512i bit_in_byte = _mm512_and_si512(pos[g], seven);
          lo[g] = _mm512_i32gather_epi64(_mm512_castsi512_si256(byte_at), base, 1);
          hi[g] = _mm512_i32gather_epi64(_mm512_extracti64x4_epi64(byte_at, 1), base, 1);
          lo[g] = _mm512_sllv_epi64(_mm512_shuffle_epi8(lo[g], bswap),
                                    _mm512_cvtepu32_epi64(_mm512_castsi512_si256(bit_in_byte)));
          hi[g] =
              _mm512_sllv_epi64(_mm512_shuffle_epi8(hi[g], bswap),
                                _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(bit_in_byte, 1)));
        }
      }
      for (int g = 0; g < Groups; ++g) {
        symbols[g] = _mm512_setzero_si512();
        consumed[g] = _mm512_setzero_si512();
      }
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) {
#pragma GCC unroll 3
        for (int g = 0; g < Groups; ++g) {
          const __m512i top = _mm512_permutex2var_epi32(lo[g], high_dwords, hi[g]);
          const __m512i index = _mm512_srli_epi32(top, 32 - kCodeLimit);
          __m512i length = min_length;
          for (int l = d.min_length; l < d.max_length; ++l) {
            length = _mm512_mask_add_epi32(length, _mm512_cmpge_epu32_mask(index, limit[l]), length,
                                           one);
          }
          const __m512i rank =
              _mm512_add_epi32(_mm512_permutexvar_epi32(length, offset),
                               _mm512_srlv_epi32(index, _mm512_sub_epi32(twelve, length)));
          const __m512i low_half = _mm512_permutex2var_epi8(sorted0, rank, sorted1);
          const __m512i high_half = _mm512_permutex2var_epi8(sorted2, rank, sorted3);
          const __m512i symbol =
              _mm512_mask_blend_epi8(_mm512_test_epi8_mask(rank, high_bit), low_half, high_half);
          symbols[g] = _mm512_or_si512(
              symbols[g],
              _mm512_sll_epi32(_mm512_and_si512(symbol, symbol_mask), _mm_cvtsi32_si128(8 * j)));
          consumed[g] = _mm512_add_epi32(consumed[g], length);
          lo[g] = _mm512_sllv_epi64(lo[g], _mm512_cvtepu32_epi64(_mm512_castsi512_si256(length)));
          hi[g] =
              _mm512_sllv_epi64(hi[g], _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64(length, 1)));
        }
      }
#pragma GCC unroll 3
      for (int g = 0; g < Groups; ++g) {
        pos[g] = _mm512_add_epi32(pos[g], consumed[g]);
        _mm512_store_si512(staging[g] + 16 * r, symbols[g]);
      }
    }
    for (int g = 0; g < Groups; ++g) {
      for (int l = 0; l < 16; ++l) {
        const __m512i lane =
            _mm512_i32gather_epi32(_mm512_add_epi32(column, _mm512_set1_epi32(l)), staging[g], 4);
        _mm512_storeu_si512(out + s.first_symbol[16 * g + l] + 64 * b, lane);
      }
    }
  }
  const std::uint64_t done = blocks * 64;
  for (int g = 0; g < Groups; ++g) {
    alignas(64) std::uint32_t lane_pos[16];
    _mm512_store_si512(lane_pos, pos[g]);
    for (int l = 0; l < 16; ++l) {
      const int i = 16 * g + l;
      decode_one_stream(s.bytes.data() + s.start_byte[i], lane_pos[l], s.symbol_count[i] - done,
                        table, out + s.first_symbol[i] + done);
    }
  }
}
// What one look-up costs on this CPU, apart from any decoder: 8 independent chains of 16-lane
// gathers from a 16 KiB table (throughput), one chain (latency), and 8 chains of 16 scalar
// loads. Reported in ns per 16 elements, with the time of one dependent 64-bit add as the cycle.
struct gather_cost {
  double add_ns, gather_ns, gather_latency_ns, scalar16_ns;
};

FLOATZIP_PROBE_AVX512 gather_cost measure_gather_cost(const std::uint32_t* table32) {
  constexpr long kSteps = 4'000'000;
  gather_cost c{};
  double t0 = thread_cpu_seconds();
  std::uint64_t x = 1;
  for (long i = 0; i < 4 * kSteps; ++i) asm volatile("add $1, %0" : "+r"(x));
  c.add_ns = (thread_cpu_seconds() - t0) * 1e9 / (4 * kSteps);
  const __m512i mask = _mm512_set1_epi32((1 << kCodeLimit) - 1);
  __m512i chain[8];
  for (int k = 0; k < 8; ++k) chain[k] = _mm512_set1_epi32(7 * k + 1);
  t0 = thread_cpu_seconds();
  for (long i = 0; i < kSteps / 8; ++i) {
    for (int k = 0; k < 8; ++k) {
      chain[k] = _mm512_and_si512(_mm512_i32gather_epi32(chain[k], table32, 4), mask);
    }
  }
  c.gather_ns = (thread_cpu_seconds() - t0) * 1e9 / kSteps;
  __m512i one_chain = _mm512_set1_epi32(3);
  t0 = thread_cpu_seconds();
  for (long i = 0; i < kSteps / 8; ++i) {
    one_chain = _mm512_and_si512(_mm512_i32gather_epi32(one_chain, table32, 4), mask);
  }
  c.gather_latency_ns = (thread_cpu_seconds() - t0) * 1e9 / (kSteps / 8);
  std::uint32_t lanes[8][16];
  for (int k = 0; k < 8; ++k) {
    for (int l = 0; l < 16; ++l) lanes[k][l] = static_cast<std::uint32_t>(7 * k + l);
  }
  t0 = thread_cpu_seconds();
  for (long i = 0; i < kSteps / 8; ++i) {
    for (int k = 0; k < 8; ++k) {
      for (int l = 0; l < 16; ++l) {
        std::uint32_t v = table32[lanes[k][l]] & ((1u << kCodeLimit) - 1);
        asm volatile("" : "+r"(v));  // keeps the loads scalar (the compiler would gather them)
        lanes[k][l] = v;
      }
    }
  }
  c.scalar16_ns = (thread_cpu_seconds() - t0) * 1e9 / kSteps;
  std::uint32_t sink = static_cast<std::uint32_t>(x);
  for (int k = 0; k < 8; ++k) {
    sink += static_cast<std::uint32_t>(_mm512_reduce_add_epi32(chain[k]));
    for (int l = 0; l < 16; ++l) sink += lanes[k][l];
  }
  sink += static_cast<std::uint32_t>(_mm512_reduce_add_epi32(one_chain));
  if (sink == 0x12345678u) std::printf(" ");  // keeps the chains live
  return c;
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
#endif

}  // namespace

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bool cpu_has_avx512() {
#if FLOATZIP_PROBE_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("bmi2");
#else
  return false;
#endif
}

// One distribution: `symbols` are what the probe codes; `bundle` is floatzip's own bundle of the
// same values (format `format`), decoded for reference into `library_out` (value_bytes each).
struct probe_case {
  std::string name;
  std::vector<std::uint8_t> symbols;
  floatzip::value_format format;
  std::vector<std::byte> bundle;
  std::vector<std::byte> values;  // little-endian, what the library must decode
};

// Runs the case; returns false on any mismatch.
bool run_case(const probe_case& c, bool avx512) {
  const std::size_t n = c.symbols.size();
  floatzip::symbol_histogram histogram{};
  for (const std::uint8_t s : c.symbols) ++histogram[s];
  const auto lengths = floatzip::build_code_lengths(histogram, kCodeLimit);
  if (!lengths) {
    std::fprintf(stderr, "%s: build_code_lengths failed: %s\n", c.name.c_str(),
                 lengths.error().message.c_str());
    return false;
  }
  const floatzip::canonical_code code = floatzip::make_canonical_code(*lengths);
  std::vector<floatzip::decode_entry> table(std::size_t{1} << kCodeLimit);
  floatzip::build_decode_table(*lengths, kCodeLimit, table);
  [[maybe_unused]] const std::vector<std::uint32_t> table32(table.begin(), table.end());
  // streams[g - 1]: the layout of g groups of 16 streams (the scalar decoder reads g = 1's).
  std::vector<probe_streams> streams;
  for (int g = 1; g <= kMaxGroups; ++g) streams.push_back(encode_streams(c.symbols, code, 16 * g));
  std::printf("%s: %zu symbols, entropy %.3f bits, code %.3f bits/symbol (limit %d)\n",
              c.name.c_str(), n, floatzip::entropy_bits_per_symbol(histogram),
              static_cast<double>(streams[0].total_bits) / static_cast<double>(n), kCodeLimit);

  std::vector<std::uint8_t> out(n);
  std::vector<std::byte> library_out(c.values.size());
  const auto view = floatzip::parse_bundle(c.bundle);
  if (!view) {
    std::fprintf(stderr, "%s: parse_bundle failed: %s\n", c.name.c_str(),
                 view.error().message.c_str());
    return false;
  }
  floatzip::decode_options one_thread;
  one_thread.threads = 1;

  std::vector<double> scalar_s, library_s;
  // The vector variants: (name, streams layout, decoder).
  struct variant {
    const char* name;
    const probe_streams* streams;
    void (*decode)(const probe_streams&, const std::uint32_t*, const canonical_decoder&,
                   const floatzip::decode_entry*, std::uint8_t*);
    std::vector<double> seconds;
    bool checked = true;  // false only for the no-refill ceiling, which is not a decoder
  };
  std::vector<variant> variants;
#if FLOATZIP_PROBE_X86
  if (avx512) {
    variants = {
        {"table gather, 1 x 16 lanes",
         &streams[0],
         [](const probe_streams& s, const std::uint32_t* t32, const canonical_decoder&,
            const floatzip::decode_entry* t, std::uint8_t* o) { decode_avx512<1>(s, t32, t, o); },
         {}},
        {"table gather, 2 x 16 lanes",
         &streams[1],
         [](const probe_streams& s, const std::uint32_t* t32, const canonical_decoder&,
            const floatzip::decode_entry* t, std::uint8_t* o) { decode_avx512<2>(s, t32, t, o); },
         {}},
        {"table gather, 3 x 16 lanes",
         &streams[2],
         [](const probe_streams& s, const std::uint32_t* t32, const canonical_decoder&,
            const floatzip::decode_entry* t, std::uint8_t* o) { decode_avx512<3>(s, t32, t, o); },
         {}},
        {"in-register canonical, gather refill, 1 x 16",
         &streams[0],
         [](const probe_streams& s, const std::uint32_t*, const canonical_decoder& d,
            const floatzip::decode_entry* t,
            std::uint8_t* o) { decode_avx512_canonical<1, refill::gather>(s, d, t, o); },
         {}},
        {"in-register canonical, gather refill, 2 x 16",
         &streams[1],
         [](const probe_streams& s, const std::uint32_t*, const canonical_decoder& d,
            const floatzip::decode_entry* t,
            std::uint8_t* o) { decode_avx512_canonical<2, refill::gather>(s, d, t, o); },
         {}},
        {"in-register canonical, gather refill, 3 x 16",
         &streams[2],
         [](const probe_streams& s, const std::uint32_t*, const canonical_decoder& d,
            const floatzip::decode_entry* t,
            std::uint8_t* o) { decode_avx512_canonical<3, refill::gather>(s, d, t, o); },
         {}},
        {"in-register canonical, scalar refill, 1 x 16",
         &streams[0],
         [](const probe_streams& s, const std::uint32_t*, const canonical_decoder& d,
            const floatzip::decode_entry* t,
            std::uint8_t* o) { decode_avx512_canonical<1, refill::scalar>(s, d, t, o); },
         {}},
        {"in-register canonical, scalar refill, 2 x 16",
         &streams[1],
         [](const probe_streams& s, const std::uint32_t*, const canonical_decoder& d,
            const floatzip::decode_entry* t,
            std::uint8_t* o) { decode_avx512_canonical<2, refill::scalar>(s, d, t, o); },
         {}},
        {"CEILING, canonical without refill, 2 x 16",
         &streams[1],
         [](const probe_streams& s, const std::uint32_t*, const canonical_decoder& d,
            const floatzip::decode_entry* t,
            std::uint8_t* o) { decode_avx512_canonical<2, refill::none>(s, d, t, o); },
         {},
         false},
    };
  }
#endif
  [[maybe_unused]] const canonical_decoder canonical = make_canonical_decoder(code);
#if FLOATZIP_PROBE_X86
  if (avx512) {
    const gather_cost g = measure_gather_cost(table32.data());
    std::printf(
        "  look-up cost (this code's table, 16 KiB): 16-lane gather %.2f ns (%.1f adds) "
        "issued back to back, %.2f ns (%.1f adds) dependent; 16 scalar loads %.2f ns "
        "(%.1f adds)\n",
        g.gather_ns, g.gather_ns / g.add_ns, g.gather_latency_ns, g.gather_latency_ns / g.add_ns,
        g.scalar16_ns, g.scalar16_ns / g.add_ns);
  }
#endif
  bool ok = true;
  for (int run = 0; run < kRuns && ok; ++run) {
    std::fill(out.begin(), out.end(), std::uint8_t{0});
    double t0 = thread_cpu_seconds();
    decode_scalar4(streams[0], table.data(), out.data());
    scalar_s.push_back(thread_cpu_seconds() - t0);
    if (out != c.symbols) {
      std::fprintf(stderr, "%s: scalar decoder output differs from the input\n", c.name.c_str());
      ok = false;
    }
#if FLOATZIP_PROBE_X86
    for (variant& v : variants) {
      std::fill(out.begin(), out.end(), std::uint8_t{0});
      t0 = thread_cpu_seconds();
      v.decode(*v.streams, table32.data(), canonical, table.data(), out.data());
      v.seconds.push_back(thread_cpu_seconds() - t0);
      if (v.checked && out != c.symbols) {
        std::size_t at = 0;
        while (out[at] == c.symbols[at]) ++at;
        std::fprintf(stderr, "%s: AVX-512 decoder (%s) output differs from the input at %zu\n",
                     c.name.c_str(), v.name, at);
        ok = false;
      }
    }
#endif
    std::fill(library_out.begin(), library_out.end(), std::byte{0});
    t0 = thread_cpu_seconds();
    const floatzip::error err = floatzip::decompress(*view, std::span(library_out), one_thread);
    library_s.push_back(thread_cpu_seconds() - t0);
    if (err) {
      std::fprintf(stderr, "%s: floatzip::decompress failed: %s\n", c.name.c_str(),
                   err.message.c_str());
      ok = false;
    } else if (library_out != c.values) {
      std::fprintf(stderr, "%s: floatzip::decompress output differs from the input\n",
                   c.name.c_str());
      ok = false;
    }
  }
  if (!ok) return false;

  const double gs = static_cast<double>(n) * 1e-9;
  const double scalar = gs / median(scalar_s);
  std::printf("  (a) scalar, 4 streams, 1 symbol/look-up:   %6.3f G symbols/s  (1.00x)\n", scalar);
  if (avx512) {
    for (const variant& v : variants) {
      const double simd = gs / median(v.seconds);
      std::printf("  (b) AVX-512, %-44s %6.3f G symbols/s  (%.2fx)\n", v.name, simd, simd / scalar);
    }
  } else {
    std::printf("  (b) AVX-512 decoders skipped (see above)\n");
  }
  const double library = gs / median(library_s);
  std::printf("  (c) floatzip::decompress (%s, 1 thread):  %6.3f G values/s   (%.2fx)\n",
              std::string(floatzip::to_string(c.format)).c_str(), library, library / scalar);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Symbols per distribution; not a multiple of 16 * 64, so the streams differ in length and the
  // vector decoder's scalar tails run too.
  std::size_t n = (std::size_t{1} << 24) + 1234;
  if (argc > 1) n = std::strtoull(argv[1], nullptr, 10);
  if (n < kStreams) {
    std::fprintf(stderr, "usage: %s [symbols >= %d]\n", argv[0], kStreams);
    return 2;
  }
  const bool avx512 = cpu_has_avx512();
  std::printf(
      "AVX-512 16-lane Huffman decode probe (issue 12; an experiment, not floatzip's "
      "decoder). Times: median of %d runs, thread CPU time, one thread.\n",
      kRuns);
  if (!avx512) {
    std::printf("AVX-512 F/BW/VL/VBMI + BMI2 not available%s: the 16-lane decoder is skipped.\n",
                FLOATZIP_PROBE_X86 ? " on this CPU" : " (not an x86-64 build)");
  }
  std::mt19937_64 rng(12);
  std::vector<probe_case> cases;
  {
    probe_case c;
    c.name = "fp8-e4m3 (Student-t nu=5, per-tensor scale)";
    c.symbols = fp8_e4m3_symbols(n, rng);
    c.format = floatzip::value_format::fp8_e4m3;
    const std::span<const std::byte> tensors[] = {std::as_bytes(std::span(c.symbols))};
    c.bundle = floatzip::compress_bundle(c.format, tensors);
    c.values.assign(tensors[0].begin(), tensors[0].end());
    cases.push_back(std::move(c));
  }
  {
    probe_case c;
    c.name = "bf16 exponents (Gaussian sigma 0.02)";
    const std::vector<std::uint16_t> values = bf16_values(n, rng);
    c.symbols.resize(n);
    for (std::size_t i = 0; i < n; ++i) c.symbols[i] = static_cast<std::uint8_t>(values[i] >> 7);
    c.format = floatzip::value_format::bf16;
    const std::span<const std::uint16_t> tensors[] = {values};
    c.bundle = floatzip::compress_bundle(tensors);
    const auto bytes = std::as_bytes(std::span(values));
    c.values.assign(bytes.begin(), bytes.end());
    cases.push_back(std::move(c));
  }
  for (const probe_case& c : cases) {
    if (!run_case(c, avx512)) return 1;
  }
  return 0;
}
