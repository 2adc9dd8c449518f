// A host-only cublasSgemv that follows the cuBLAS documentation to the letter: A is m x n in
// column-major order with leading dimension lda; CUBLAS_OP_N: y = alpha A x + beta y (x has n
// elements, y m); CUBLAS_OP_T: y = alpha A^T x + beta y (x has m elements, y n).
#pragma once
#include <cstdio>

#include "cuda_runtime.h"
struct cublasContext {
  cudaStream_t stream = nullptr;
  void* workspace = nullptr;
};
using cublasHandle_t = cublasContext*;
enum cublasStatus_t {
  CUBLAS_STATUS_SUCCESS = 0,
  CUBLAS_STATUS_ALLOC_FAILED = 3,
  CUBLAS_STATUS_INVALID_VALUE = 7
};
enum cublasOperation_t { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum cublasMath_t { CUBLAS_PEDANTIC_MATH = 2 };
enum cublasAtomicsMode_t { CUBLAS_ATOMICS_NOT_ALLOWED = 0 };
enum cublasPointerMode_t { CUBLAS_POINTER_MODE_HOST = 0 };
inline const char* cublasGetStatusName(cublasStatus_t) { return "CUBLAS_STATUS_EMU"; }
inline const char* cublasGetStatusString(cublasStatus_t) { return "emulated"; }
inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
  *h = new cublasContext{};
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasDestroy(cublasHandle_t h) {
  delete h;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t) {
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetAtomicsMode(cublasHandle_t, cublasAtomicsMode_t) {
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetPointerMode(cublasHandle_t, cublasPointerMode_t) {
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void* w, std::size_t) {
  h->workspace = w;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSgemv(cublasHandle_t, cublasOperation_t trans, int m, int n,
                                  const float* alpha, const float* A, int lda, const float* x,
                                  int incx, const float* beta, float* y, int incy) {
  if (m < 0 || n < 0 || lda < (m > 1 ? m : 1) || incx == 0 || incy == 0)
    return CUBLAS_STATUS_INVALID_VALUE;
  auto a = [&](int i, int j) { return A[i + static_cast<long long>(j) * lda]; };  // A(i, j)
  if (trans == CUBLAS_OP_N) {
    for (int i = 0; i < m; ++i) {
      float s = 0;
      for (int j = 0; j < n; ++j) s += a(i, j) * x[j * incx];
      y[i * incy] = *alpha * s + (*beta == 0 ? 0 : *beta * y[i * incy]);
    }
  } else {
    for (int j = 0; j < n; ++j) {
      float s = 0;
      for (int i = 0; i < m; ++i) s += a(i, j) * x[i * incx];
      y[j * incy] = *alpha * s + (*beta == 0 ? 0 : *beta * y[j * incy]);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}
