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
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Below this many elements in all a step runs on the calling thread alone: a handoff to the
// pool costs more than a small step saves.
constexpr int64_t kParallelMin = int64_t{1} << 17;
// Steps of at least this many elements in all are helped by the kernels' own threads (see
// Helpers), smaller ones by XLA's pool, whose threads are often still awake from the
// program's other work (a closure's loss and gradient) and start at once, where a helper
// asleep between steps takes tens of microseconds to wake: on the 270k-parameter MLP of
// benchmarks/bench_wrapper.py, step(closure) took 1.05x the jitted optax step on the helpers
// (median of four runs) and 1.035x on XLA's pool.
constexpr int64_t kOwnHelpersMin = int64_t{1} << 22;
// How many terms each kernel reads; a caller may append more (a value the call must wait for),
// which are not read.
constexpr int64_t kAdamTerms = 11, kSgdTerms = 7;

ffi::Error TooFewTerms() { return ffi::Error::InvalidArgument("too few terms for the kernel"); }

// A piece of one buffer: elements [lo, hi) of the step's buffer number `buffer`.
struct Piece {
  size_t buffer;
  int64_t lo, hi;
};

// The step's buffers cut into pieces of about `chunk` elements, each a whole number of 64-byte
// lines (so that no two threads write the same cache line); a buffer of at most `chunk`
// elements is one piece.
std::vector<Piece> Cut(const std::vector<int64_t>& sizes, int64_t chunk) {
  std::vector<Piece> pieces;
  for (size_t b = 0; b < sizes.size(); ++b) {
    int64_t parts = std::max<int64_t>(1, sizes[b] / chunk);
    int64_t step = ((sizes[b] + parts - 1) / parts + 15) / 16 * 16;
    for (int64_t lo = 0; lo < sizes[b]; lo += step) {
      pieces.push_back({b, lo, std::min(sizes[b], lo + step)});
    }
  }
  return pieces;
}

// Huge pages for the buffers a step writes in place (the params and the state).
//
// A one-pass step over large buffers is bound by memory, and with 4 KiB pages it also walks
// a page table entry per 4 KiB of each of its 5 to 7 streams. The optimizer keeps its params
// and state in buffers that live from step to step (donated, so each call sees the same
// addresses), and backing them with 2 MiB pages makes the step faster (measured, Adam on 10M
// floats: 4.13-4.23 ms against 4.38-4.58 ms with 4 KiB pages, in the README). XLA allocates
// them with 4 KiB pages, so the kernel asks Linux to back them with huge pages: MADV_HUGEPAGE
// for later faults, MADV_COLLAPSE for the pages they have (a copy, ~0.5 ms per MB).
//
// A buffer is advised from the second time the kernel sees it (same address, same size),
// then again after 1, 2, 4, ... calls, up to every kLongestCheck: an advice where the pages are
// huge already costs little (~2-10 us, though it drains every CPU's page lists), and a buffer
// freed and replaced by another at its address (an optimizer made again) gets huge pages soon.
// A buffer new at every call (a result not donated) is advised only where its address comes
// back, and an advice that had to copy again (timed), or that failed, waits up to
// kLongestWait calls before the next. Only whole 2 MiB pages inside the buffer are advised;
// the range keeps its MADV_HUGEPAGE flag after the buffer is freed, so later allocations there
// may fault in huge pages too. Where the system's setting is "never"
// (/sys/kernel/mm/transparent_hugepage/enabled), or Linux refuses MADV_COLLAPSE (EINVAL:
// before 6.1, or huge pages disabled for the process), the kernel does not ask.
class HugePages {
 public:
  HugePages() : refused_(SystemSaysNever()) {}

  static constexpr uintptr_t kPage = uintptr_t{1} << 21;
  // Buffers of fewer bytes than this keep their pages (most of them would be at the edges).
  static constexpr int64_t kMinBytes = int64_t{4} << 21;
  static_assert(kMinBytes >= int64_t{2} * static_cast<int64_t>(kPage),
                "a buffer must hold a whole huge page");

  void Back(float* data, int64_t count) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    const int64_t bytes = count * static_cast<int64_t>(sizeof(float));
    if (bytes < kMinBytes || refused_.load(std::memory_order_relaxed)) return;
    const uintptr_t start = reinterpret_cast<uintptr_t>(data);
    const uintptr_t lo = (start + kPage - 1) / kPage * kPage;
    const uintptr_t hi = (start + static_cast<uintptr_t>(bytes)) / kPage * kPage;
    if (hi <= lo) return;
    bool first;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (seen_.size() > kMaxSeen) seen_.clear();  // mostly buffers long freed
      auto [entry, fresh] = seen_.try_emplace(start, Sighting{bytes});
      Sighting& seen = entry->second;
      if (fresh || seen.bytes != bytes) {
        seen = Sighting{bytes};
        return;
      }
      if (seen.skip > 0) {
        --seen.skip;
        return;
      }
      first = !seen.advised;
      seen.advised = true;
      seen.skip = kLongestWait;  // until this advice is done (another thread may call)
    }
    // Outside the lock: a first collapse copies for as long as the buffer is large, and other
    // threads step other buffers meanwhile.
    const auto began = std::chrono::steady_clock::now();
    void* range = reinterpret_cast<void*>(lo);
    if (first) madvise(range, hi - lo, MADV_HUGEPAGE);
    const int failed = madvise(range, hi - lo, kCollapse) == 0 ? 0 : errno;
    const std::chrono::duration<double, std::micro> took =
        std::chrono::steady_clock::now() - began;
    if (failed == EINVAL) refused_.store(true, std::memory_order_relaxed);
    // Pages already huge take ~0.05 us per MB to check; a copy takes ~500 us per MB.
    const bool copied = took.count() > 50.0 + 5.0 * static_cast<double>(hi - lo) / (1 << 20);
    std::lock_guard<std::mutex> lock(mutex_);
    auto entry = seen_.find(start);
    if (entry == seen_.end() || entry->second.bytes != bytes) return;
    Sighting& seen = entry->second;
    const bool again = !first && (copied || failed != 0);
    seen.wait = first ? 1 : std::min(std::max<uint64_t>(2 * seen.wait, 1),
                                     again ? kLongestWait : kLongestCheck);
    seen.skip = seen.wait;
#endif
  }

 private:
  static bool SystemSaysNever() {
    std::FILE* setting = std::fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (setting == nullptr) return false;
    char text[128] = {};  // the last byte is never read into: the text ends with a 0
    std::fread(text, 1, sizeof(text) - 1, setting);
    std::fclose(setting);
    return std::strstr(text, "[never]") != nullptr;
  }

  struct Sighting {
    int64_t bytes;
    uint64_t skip = 0;  // calls to let pass before the next advice
    uint64_t wait = 0;  // the calls let pass after the last advice
    bool advised = false;
  };
  static constexpr size_t kMaxSeen = 4096;
  static constexpr uint64_t kLongestCheck = 64, kLongestWait = 1024;
#if defined(MADV_COLLAPSE)
  static constexpr int kCollapse = MADV_COLLAPSE;
#else
  static constexpr int kCollapse = 25;  // Linux 6.1's value, where the headers are older
#endif
  std::mutex mutex_;
  std::unordered_map<uintptr_t, Sighting> seen_;
  std::atomic<bool> refused_;
};

HugePages& huge_pages() {
  static HugePages* pages = new HugePages();  // never destroyed: kernels may run at exit
  return *pages;
}

// Threads of the kernels' own that help a step's calling thread through its pieces.
//
// They were XLA's intra-op pool's at first, but in a process that runs many other XLA
// programs a task scheduled there sometimes started 0.3-5 ms late (one call in ten, timed
// inside the kernel: the calling thread then ran most of a 10M-float pass alone, 5-8 ms
// instead of 4.3). Linux may wake a sleeping thread on its waker's CPU, where it waits for the
// waker's time slice; so the helpers' affinity leaves out the CPU the calling thread runs on
// (set again only when that CPU changes). With both, 1 x 10M Adam steps took 4.15-4.72 ms in
// 57 of 60 such calls, against 4.2-7.8 ms (half above 4.8) on XLA's pool. A helper sleeps on a
// condition variable between steps; there are at most as many as XLA's pool has threads, less
// one (one per core with the calling thread).
class Helpers {
 public:
  // Runs `task` on a helper thread, starting one while fewer than `threads` are running.
  void Run(std::function<void()> task, int64_t threads) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
      if (started_ < threads) {
        ++started_;
        std::thread([this] { Work(); }).detach();
      }
      AvoidCallersCpu();
    }
    ready_.notify_one();
  }

 private:
  // Keeps the helpers off the CPU the calling thread runs on: woken there, a helper would wait
  // for the caller's time slice.
  void AvoidCallersCpu() {
#if defined(__linux__)
    const int cpu = sched_getcpu();
    if (cpu < 0 || cpu == avoided_) return;
    cpu_set_t allowed;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return;
    CPU_CLR(cpu, &allowed);
    if (CPU_COUNT(&allowed) == 0) return;
    for (pid_t tid : tids_) sched_setaffinity(tid, sizeof(allowed), &allowed);
    avoided_ = cpu;
#endif
  }

  void Work() {
#if defined(__linux__)
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tids_.push_back(static_cast<pid_t>(syscall(SYS_gettid)));
      avoided_ = -1;
    }
#endif
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  int64_t started_ = 0;
#if defined(__linux__)
  std::vector<pid_t> tids_;
  int avoided_ = -1;
#endif
};

Helpers& helper_threads() {
  static Helpers* threads = new Helpers();  // never destroyed: its threads outlive main
  return *threads;
}

// Runs body(piece) over every element of buffers of the given sizes, on the calling thread
// and on helper threads (as many as XLA's intra-op pool has threads, with the calling one).
//
// The pieces are claimed from a shared counter, and the calling thread claims them too: it
// never waits for a task that has not started (the helpers may all be busy, in this call or
// in another kernel running beside it), only for pieces other threads are running.
// A task that starts after every piece is claimed finds nothing to do; the counters are
// shared so that it may start after this call has returned.
void ParallelFor(ffi::ThreadPool& pool, const std::vector<int64_t>& sizes,
                 const std::function<void(const Piece&)>& body) {
  int64_t total = 0;
  for (int64_t size : sizes) total += size;
  // With the calling thread, as many threads as XLA's pool has (one per core): one more
  // would only take turns with the others on a memory-bound loop.
  const int64_t threads = pool.num_threads() - 1;
  const int64_t helpers = std::min<int64_t>(threads, total / kParallelMin);
  if (helpers <= 0) {
    for (size_t b = 0; b < sizes.size(); ++b) body({b, 0, sizes[b]});
    return;
  }
  struct Progress {
    std::vector<Piece> pieces;
    std::atomic<size_t> next{0}, done{0};
  };
  auto progress = std::make_shared<Progress>();
  progress->pieces = Cut(sizes, std::max<int64_t>(16, total / (4 * (helpers + 1))));
  const std::function<void(const Piece&)>* work = &body;
  auto drain = [progress, work] {
    const size_t count = progress->pieces.size();
    for (size_t c; (c = progress->next.fetch_add(1)) < count;) {
      (*work)(progress->pieces[c]);
      progress->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t t = 0; t < helpers; ++t) {
    if (total >= kOwnHelpersMin) {
      helper_threads().Run(drain, threads);
    } else {
      pool.Schedule([drain] { drain(); });
    }
  }
  drain();
  while (progress->done.load(std::memory_order_acquire) < progress->pieces.size()) {
    std::this_thread::yield();
  }
}

// The element loops are compiled once per combination of the terms that switch an operation on
// or off (a weight decay, maximize, Adam's first-step form, nesterov): with the switches as
// runtime values the vectorised loop computes both sides and blends them, ~7% slower on a step
// that is otherwise bound by memory. `sign` is +1 unless maximizing, and x * 1 is x.
enum Switch { kScaled = 1, kL2 = 2, kThird = 4, kFourth = 8 };

// Which loop serves a step: the switches its terms set.
int Switches(float sign, int flags, bool third) {
  return (sign != 1.f ? kScaled : 0) | (flags & 1 ? kL2 : 0) | (third ? kThird : 0) |
         (flags & 2 ? kFourth : 0);
}

using AdamLoop = void (*)(int64_t, int64_t, const float*, const float*, const float*,
                          const float*, const float*, float*, float*, float*);
using SgdLoop = void (*)(int64_t, int64_t, const float*, const float*, const float*,
                         const float*, float*, float*);

// terms: sign, l2, from_m, coef, beta2, one_minus_beta2, inverse_correction2_sqrt, eps, scale,
//        decay_m1, flags (1: L2 weight decay, 2: decoupled weight decay)
// switches: kThird: from_m; kFourth: decoupled weight decay.
template <int S>
void AdamRange(int64_t lo, int64_t hi, const float* t, const float* __restrict__ P,
               const float* __restrict__ G, const float* __restrict__ M,
               const float* __restrict__ V, float* __restrict__ PO, float* __restrict__ MO,
               float* __restrict__ VO) {
  const float sign = t[0], l2 = t[1], coef = t[3], beta2 = t[4], one_minus_beta2 = t[5];
  const float inverse_correction2_sqrt = t[6], eps = t[7], scale = t[8], decay_m1 = t[9];
  for (int64_t i = lo; i < hi; ++i) {
    const float p = P[i];
    float g = S & kScaled ? sign * G[i] : G[i];
    if (S & kL2) g = std::fma(l2, p, g);
    const float m = M[i];
    const float m_new = std::fma(coef, g - m, S & kThird ? m : g);
    const float v_new = std::fma(V[i], beta2, (one_minus_beta2 * g) * g);
    const float denom = std::fma(std::sqrt(v_new), inverse_correction2_sqrt, eps);
    float u = (m_new * scale) / denom;
    if (S & kFourth) u = std::fma(decay_m1, p, u);
    PO[i] = p + u;
    MO[i] = m_new;
    VO[i] = v_new;
  }
}

// terms: sign, l2, decay, keep, momentum, neg_lr, flags (1: L2 weight decay, 2: nesterov)
// switches: kFourth: nesterov.
template <int S>
void SgdRange(int64_t lo, int64_t hi, const float* t, const float* __restrict__ P,
              const float* __restrict__ G, const float* __restrict__ B, float* __restrict__ PO,
              float* __restrict__ BO) {
  const float sign = t[0], l2 = t[1], decay = t[2], keep = t[3], momentum = t[4];
  const float neg_lr = t[5];
  for (int64_t i = lo; i < hi; ++i) {
    const float p = P[i];
    float g = S & kScaled ? sign * G[i] : G[i];
    if (S & kL2) g = std::fma(l2, p, g);
    const float b_new = std::fma(B[i], decay, keep * g);
    const float d = S & kFourth ? std::fma(momentum, b_new, g) : b_new;
    PO[i] = std::fma(d, neg_lr, p);
    BO[i] = b_new;
  }
}

template <int... S>
AdamLoop AdamLoopFor(int switches, std::integer_sequence<int, S...>) {
  static constexpr AdamLoop loops[] = {AdamRange<S>...};
  return loops[switches];
}

template <int... S>
SgdLoop SgdLoopFor(int switches, std::integer_sequence<int, S...>) {
  static constexpr SgdLoop loops[] = {SgdRange<S>...};
  return loops[switches];
}

// The loop compiled for a step's terms.
AdamLoop AdamLoopFor(const float* t) {
  return AdamLoopFor(Switches(t[0], static_cast<int>(t[10]), t[2] != 0.f),
                     std::make_integer_sequence<int, 16>());
}

SgdLoop SgdLoopFor(const float* t) {
  return SgdLoopFor(Switches(t[0], static_cast<int>(t[6]), false),
                    std::make_integer_sequence<int, 16>());
}

// A step's buffers, column by column: `inputs[c][b]` is input column c's buffer b (the
// params, the gradients, then each state field), `outputs[c][b]` output column c's (the params,
// then each state field), `sizes[b]` buffer b's length in every column.
struct Columns {
  std::vector<std::vector<const float*>> inputs;
  std::vector<std::vector<float*>> outputs;
  std::vector<int64_t> sizes;
};

// Reads `args` (input columns of `count` buffers each, one after another) and `rets` (output
// columns likewise) into Columns, checking that every buffer has the length of its row.
ffi::ErrorOr<Columns> Read(const ffi::RemainingArgs& args, const ffi::RemainingRets& rets,
                           size_t input_columns, size_t output_columns) {
  if (args.size() % input_columns != 0 || args.size() / input_columns * output_columns !=
                                              rets.size()) {
    return ffi::Unexpected(ffi::Error::InvalidArgument("buffer counts do not form columns"));
  }
  const size_t count = args.size() / input_columns;
  Columns columns{std::vector<std::vector<const float*>>(input_columns),
                  std::vector<std::vector<float*>>(output_columns),
                  std::vector<int64_t>(count)};
  for (size_t c = 0; c < input_columns; ++c) {
    for (size_t b = 0; b < count; ++b) {
      auto buffer = args.get<ffi::Buffer<ffi::F32>>(c * count + b);
      if (buffer.has_error()) return ffi::Unexpected(buffer.error());
      const int64_t size = buffer->element_count();
      if (c == 0) columns.sizes[b] = size;
      if (size != columns.sizes[b]) {
        return ffi::Unexpected(ffi::Error::InvalidArgument("buffer lengths differ in a row"));
      }
      columns.inputs[c].push_back(buffer->typed_data());
    }
  }
  for (size_t c = 0; c < output_columns; ++c) {
    for (size_t b = 0; b < count; ++b) {
      auto buffer = rets.get<ffi::Buffer<ffi::F32>>(c * count + b);
      if (buffer.has_error()) return ffi::Unexpected(buffer.error());
      if ((*buffer)->element_count() != columns.sizes[b]) {
        return ffi::Unexpected(ffi::Error::InvalidArgument("result lengths differ in a row"));
      }
      columns.outputs[c].push_back((*buffer)->typed_data());
    }
  }
  return columns;
}

// The buffers a step writes in place, backed with huge pages (see HugePages).
void BackWithHugePages(const Columns& c) {
  for (const auto& column : c.outputs) {
    for (size_t b = 0; b < column.size(); ++b) huge_pages().Back(column[b], c.sizes[b]);
  }
}

ffi::Error AdamStep(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> terms, ffi::RemainingArgs args,
                    ffi::RemainingRets rets) {
  if (terms.element_count() < kAdamTerms) return TooFewTerms();
  auto read = Read(args, rets, 4, 3);
  if (read.has_error()) return read.error();
  const Columns& c = *read;
  BackWithHugePages(c);
  const float* t = terms.typed_data();
  const AdamLoop loop = AdamLoopFor(t);
  ParallelFor(pool, c.sizes, [&](const Piece& s) {
    const size_t b = s.buffer;
    loop(s.lo, s.hi, t, c.inputs[0][b], c.inputs[1][b], c.inputs[2][b], c.inputs[3][b],
         c.outputs[0][b], c.outputs[1][b], c.outputs[2][b]);
  });
  return ffi::Error::Success();
}

ffi::Error SgdStep(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> terms, ffi::RemainingArgs args,
                   ffi::RemainingRets rets) {
  if (terms.element_count() < kSgdTerms) return TooFewTerms();
  auto read = Read(args, rets, 3, 2);
  if (read.has_error()) return read.error();
  const Columns& c = *read;
  BackWithHugePages(c);
  const float* t = terms.typed_data();
  const SgdLoop loop = SgdLoopFor(t);
  ParallelFor(pool, c.sizes, [&](const Piece& s) {
    const size_t b = s.buffer;
    loop(s.lo, s.hi, t, c.inputs[0][b], c.inputs[1][b], c.inputs[2][b], c.outputs[0][b],
         c.outputs[1][b]);
  });
  return ffi::Error::Success();
}

// A step over one buffer per column (the params, then each state field) whose gradients come
// as segments: segment k is the gradient of elements [starts[k], starts[k] + sizes[k]) of the
// buffers, the segments laid end to end from the first element.
struct Segments {
  std::vector<const float*> inputs;  // params, then each state field
  std::vector<float*> outputs;       // likewise
  std::vector<const float*> grads;
  std::vector<int64_t> sizes, starts;
  int64_t length = 0;  // of each buffer
};

// Reads `args` (the params and `fields` state buffers, then the gradient segments) and `rets`
// (the params and the state buffers), checking that the buffers have one length and that the
// segments fit in it.
ffi::ErrorOr<Segments> ReadSegments(const ffi::RemainingArgs& args,
                                    const ffi::RemainingRets& rets, size_t fields) {
  const size_t whole = 1 + fields;
  if (args.size() <= whole || rets.size() != whole) {
    return ffi::Unexpected(ffi::Error::InvalidArgument("buffer counts do not form a step"));
  }
  Segments s;
  int64_t length = 0;
  for (size_t c = 0; c < whole; ++c) {
    auto in = args.get<ffi::Buffer<ffi::F32>>(c);
    if (in.has_error()) return ffi::Unexpected(in.error());
    auto out = rets.get<ffi::Buffer<ffi::F32>>(c);
    if (out.has_error()) return ffi::Unexpected(out.error());
    if (c == 0) length = in->element_count();
    if (in->element_count() != length || (*out)->element_count() != length) {
      return ffi::Unexpected(ffi::Error::InvalidArgument("buffer lengths differ"));
    }
    s.inputs.push_back(in->typed_data());
    s.outputs.push_back((*out)->typed_data());
  }
  s.length = length;
  int64_t at = 0;
  for (size_t k = whole; k < args.size(); ++k) {
    auto grad = args.get<ffi::Buffer<ffi::F32>>(k);
    if (grad.has_error()) return ffi::Unexpected(grad.error());
    s.grads.push_back(grad->typed_data());
    s.sizes.push_back(grad->element_count());
    s.starts.push_back(at);
    at += grad->element_count();
  }
  if (at > length) {
    return ffi::Unexpected(ffi::Error::InvalidArgument("gradient segments overrun the buffers"));
  }
  return s;
}

void BackWithHugePages(const Segments& s) {
  for (float* buffer : s.outputs) huge_pages().Back(buffer, s.length);
}

ffi::Error AdamSegmentsStep(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> terms,
                            ffi::RemainingArgs args, ffi::RemainingRets rets) {
  if (terms.element_count() < kAdamTerms) return TooFewTerms();
  auto read = ReadSegments(args, rets, 2);
  if (read.has_error()) return read.error();
  const Segments& c = *read;
  BackWithHugePages(c);
  const float* t = terms.typed_data();
  const AdamLoop loop = AdamLoopFor(t);
  ParallelFor(pool, c.sizes, [&](const Piece& s) {
    const int64_t o = c.starts[s.buffer];
    loop(s.lo, s.hi, t, c.inputs[0] + o, c.grads[s.buffer], c.inputs[1] + o, c.inputs[2] + o,
         c.outputs[0] + o, c.outputs[1] + o, c.outputs[2] + o);
  });
  return ffi::Error::Success();
}

ffi::Error SgdSegmentsStep(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> terms,
                           ffi::RemainingArgs args, ffi::RemainingRets rets) {
  if (terms.element_count() < kSgdTerms) return TooFewTerms();
  auto read = ReadSegments(args, rets, 1);
  if (read.has_error()) return read.error();
  const Segments& c = *read;
  BackWithHugePages(c);
  const float* t = terms.typed_data();
  const SgdLoop loop = SgdLoopFor(t);
  ParallelFor(pool, c.sizes, [&](const Piece& s) {
    const int64_t o = c.starts[s.buffer];
    loop(s.lo, s.hi, t, c.inputs[0] + o, c.grads[s.buffer], c.inputs[1] + o, c.outputs[0] + o,
         c.outputs[1] + o);
  });
  return ffi::Error::Success();
}

}  // namespace

// Arguments: the terms, then the step's buffers column by column (the params, the gradients,
// each state field; n buffers each); results: the params, then each state field (n each), each
// aliased to its argument by the caller. One call steps every array it is given (optim_jax
// passes up to 32 per call).
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OptimJaxAdamF32, AdamStep,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().RemainingArgs()
        .RemainingRets());

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OptimJaxSgdF32, SgdStep,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().RemainingArgs()
        .RemainingRets());

// Arguments: the terms, then the params and each state field (one buffer each, aliased to the
// results), then gradient segments laid end to end over those buffers; results: the params,
// then each state field. One call steps a group's buffer.
XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OptimJaxAdamSegmentsF32, AdamSegmentsStep,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().RemainingArgs()
        .RemainingRets());

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    OptimJaxSgdSegmentsF32, SgdSegmentsStep,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().RemainingArgs()
        .RemainingRets());
