// GoogleTest typed-test plumbing for "this test, once per value format": the type list of every
// format and readable test names (`KernelFormats/fp8_e4m3.…`), shared by the kernel and GPU tests.
//
//   template <class C> class MyFormats : public testing::Test {};
//   TYPED_TEST_SUITE(MyFormats, test::all_formats, test::format_name);
//   TYPED_TEST(MyFormats, RoundTrips) { constexpr value_format F = TypeParam::value; ... }
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <type_traits>

#include "floatzip/value_format.hpp"

namespace floatzip::test {

template <value_format F>
using format_constant = std::integral_constant<value_format, F>;

using all_formats =
    testing::Types<format_constant<value_format::bf16>, format_constant<value_format::fp16>,
                   format_constant<value_format::fp32>, format_constant<value_format::bf16_in_fp32>,
                   format_constant<value_format::fp8_e4m3>, format_constant<value_format::fp8_e5m2>,
                   format_constant<value_format::bf16_in_fp16>>;

struct format_name {
  template <class C>
  static std::string GetName(int /*index*/) {
    std::string name(to_string(C::value));
    std::replace(name.begin(), name.end(), '-', '_');
    return name;
  }
};

}  // namespace floatzip::test
