// One-pass CPU steps over float32 buffers for optim_jax's stateful optimizers.
//
// XLA's CPU backend writes each output of an elementwise update in its own loop (Adam's
// param, exp_avg and exp_avg_sq: three passes over memory). These kernels read the param, the
// gradient and the state once and write the param and the state in place (the buffers are
// aliased by the caller), one pass.
//
// Each kernel is bit-identical to the XLA program of the same step: the per-step scalars are
// computed by XLA and passed in `terms`, and the element arithmetic repeats XLA's operations
// in XLA's order, with a fused multiply-add exactly where XLA CPU contracts one (it contracts
// a multiply feeding an add). Built with -ffp-contract=off, so that the compiler adds no
// contraction of its own; optim_jax checks the equality at first use and keeps XLA's path
// where it does not hold.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Below this many elements a kernel runs on the calling thread alone: XLA runs independent
// kernel calls side by side already, and a handoff costs more than a small array saves.
constexpr int64_t kParallelMin = int64_t{1} << 17;

// Runs body(lo, hi) over [0, n) in chunks, on the calling thread and on XLA's intra-op pool.
//
// The chunks are claimed from a shared counter, and the calling thread claims them too: it
// never waits for a task that has not started (the pool's threads may all be busy, in this
// call or in another kernel running beside it), only for chunks other threads are running.
// A task that starts after every chunk is claimed finds nothing to do; the counters are
// shared so that it may start after this call has returned.
void ParallelFor(ffi::ThreadPool& pool, int64_t n,
                 const std::function<void(int64_t, int64_t)>& body) {
  int64_t chunks = (n + kParallelMin - 1) / kParallelMin;
  int64_t helpers = std::min<int64_t>(pool.num_threads(), chunks - 1);
  if (helpers <= 0) {
    body(0, n);
    return;
  }
  // Chunks of whole 64-byte lines, so that no two threads write the same cache line.
  chunks = std::min<int64_t>(chunks, 4 * (helpers + 1));
  int64_t chunk = ((n + chunks - 1) / chunks + 15) / 16 * 16;
  chunks = (n + chunk - 1) / chunk;
  struct Progress {
    std::atomic<int64_t> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  const std::function<void(int64_t, int64_t)>* work = &body;
  auto drain = [progress, work, chunks, chunk, n] {
    for (int64_t c; (c = progress->next.fetch_add(1)) < chunks;) {
      (*work)(c * chunk, std::min(n, (c + 1) * chunk));
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 0; t < helpers; ++t) pool.Schedule([drain] { drain(); });
  drain();
  while (progress->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

// terms: sign, l2, from_m, coef, beta2, one_minus_beta2, inverse_correction2_sqrt, eps, scale,
//        decay_m1, flags (1: L2 weight decay, 2: decoupled weight decay)
void AdamRange(int64_t lo, int64_t hi, const float* t, const float* __restrict__ P,
               const float* __restrict__ G, const float* __restrict__ M,
               const float* __restrict__ V, float* __restrict__ PO, float* __restrict__ MO,
               float* __restrict__ VO) {
  const float sign = t[0], l2 = t[1], coef = t[3], beta2 = t[4], one_minus_beta2 = t[5];
  const float inverse_correction2_sqrt = t[6], eps = t[7], scale = t[8], decay_m1 = t[9];
  const bool from_m = t[2] != 0.f;
  const int flags = static_cast<int>(t[10]);
  const bool l2_decay = flags & 1, decoupled = flags & 2;
  for (int64_t i = lo; i < hi; ++i) {
    const float p = P[i];
    float g = sign * G[i];
    if (l2_decay) g = std::fma(l2, p, g);
    const float m = M[i];
    const float m_new = std::fma(coef, g - m, from_m ? m : g);
    const float v_new = std::fma(V[i], beta2, (one_minus_beta2 * g) * g);
    const float denom = std::fma(std::sqrt(v_new), inverse_correction2_sqrt, eps);
    float u = (m_new * scale) / denom;
    if (decoupled) u = std::fma(decay_m1, p, u);
    PO[i] = p + u;
    MO[i] = m_new;
    VO[i] = v_new;
  }
}

// terms: sign, l2, decay, keep, momentum, neg_lr, flags (1: L2 weight decay, 2: nesterov)
void SgdRange(int64_t lo, int64_t hi, const float* t, const float* __restrict__ P,
              const float* __restrict__ G, const float* __restrict__ B, float* __restrict__ PO,
              float* __restrict__ BO) {
  const float sign = t[0], l2 = t[1], decay = t[2], keep = t[3], momentum = t[4];
  const float neg_lr = t[5];
  const int flags = static_cast<int>(t[6]);
  const bool l2_decay = flags & 1, nesterov = flags & 2;
  for (int64_t i = lo; i < hi; ++i) {
    const float p = P[i];
    float g = sign * G[i];
    if (l2_decay) g = std::fma(l2, p, g);
    const float b_new = std::fma(B[i], decay, keep * g);
    const float d = nesterov ? std::fma(momentum, b_new, g) : b_new;
    PO[i] = std::fma(d, neg_lr, p);
    BO[i] = b_new;
  }
}

using F32 = ffi::Buffer<ffi::F32>;
using F32Out = ffi::ResultBuffer<ffi::F32>;

ffi::Error AdamStep(ffi::ThreadPool pool, F32 p, F32 g, F32 m, F32 v, F32 terms, F32Out p_out,
                    F32Out m_out, F32Out v_out) {
  const float* t = terms.typed_data();
  ParallelFor(pool, p.element_count(), [&](int64_t lo, int64_t hi) {
    AdamRange(lo, hi, t, p.typed_data(), g.typed_data(), m.typed_data(), v.typed_data(),
              p_out->typed_data(), m_out->typed_data(), v_out->typed_data());
  });
  return ffi::Error::Success();
}

ffi::Error SgdStep(ffi::ThreadPool pool, F32 p, F32 g, F32 b, F32 terms, F32Out p_out,
                   F32Out b_out) {
  const float* t = terms.typed_data();
  ParallelFor(pool, p.element_count(), [&](int64_t lo, int64_t hi) {
    SgdRange(lo, hi, t, p.typed_data(), g.typed_data(), b.typed_data(), p_out->typed_data(),
             b_out->typed_data());
  });
  return ffi::Error::Success();
}

}  // namespace

// Arguments: the param, the gradient, the state buffers, the terms; results: the param and the
// state buffers, each aliased to its argument by the caller.
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OptimJaxAdamF32, AdamStep,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
        .Arg<F32>().Ret<F32>().Ret<F32>().Ret<F32>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OptimJaxSgdF32, SgdStep,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
        .Ret<F32>().Ret<F32>());
