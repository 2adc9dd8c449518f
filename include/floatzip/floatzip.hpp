// floatzip: lossless compression of BF16 neural-network weights. The whole CPU API.
#pragma once

#include "floatzip/bf16.hpp"
#include "floatzip/bundle_format.hpp"
#include "floatzip/decoder.hpp"
#include "floatzip/encoder.hpp"
#include "floatzip/error.hpp"
#include "floatzip/huffman.hpp"
