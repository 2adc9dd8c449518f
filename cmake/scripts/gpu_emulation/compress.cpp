#include <cstdio>

#include "floatzip/container.hpp"
int main(int argc, char** argv) {
  auto r = floatzip::compress_file(argv[1], argv[2]);
  if (!r) {
    std::fprintf(stderr, "%s\n", r.error().message.c_str());
    return 1;
  }
  return 0;
}
