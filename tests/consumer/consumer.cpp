// Exits non-zero unless floatzip's headers, include paths and language level reached this build.
#include <cstdint>
#include <cstdio>

#include "floatzip/bf16.hpp"

int main() {
  // 1.0 (0x3F80), -2.0 (0xC000), the smallest subnormal, a quiet NaN with a payload.
  constexpr std::uint16_t kPatterns[] = {0x3F80, 0xC000, 0x0001, 0x7FC1};
  for (std::uint16_t w : kPatterns) {
    const std::uint16_t rebuilt =
        floatzip::bf16_merge(floatzip::bf16_exponent(w), floatzip::bf16_sign_mantissa(w));
    if (rebuilt != w) {
      std::fprintf(stderr, "bf16 round trip of 0x%04x gave 0x%04x\n", unsigned{w},
                   unsigned{rebuilt});
      return 1;
    }
  }
  std::printf("floatzip %d.%d.%d consumer ok\n", floatzip::kVersionMajor, floatzip::kVersionMinor,
              floatzip::kVersionPatch);
  return 0;
}
