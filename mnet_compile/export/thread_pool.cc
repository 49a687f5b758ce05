// The fork-join thread pool linked into every CPU artifact (export/thread_pool.py).
//
// TVM's generated code starts each parallel loop through the pointer __TVMBackendParallelLaunch, which the TVM
// runtime points at its own pool when it loads the library. mnet_thread_pool(threads), called once by the
// loader, starts `threads - 1` workers and points it here instead. A launch publishes the job with one atomic
// increment, the caller runs task 0 and the workers, spinning on `pause` between jobs, run the others: no
// queue, no per-launch allocation, no sched_yield in the spin between kernels. After kPauseNs without a job a
// worker spins on sched_yield instead, and after kSpinNs it sleeps on a condition variable until a launch wakes
// it. Waking a sleeping worker took 1.4 ms on a 2-vCPU VM, so it sleeps only after a gap longer than an app's
// frame interval (TVM's pool had stopped spinning within 80 ms there). A task's error is raised in the
// launching thread, as TVM's pool does. A launch from inside a task, or while another thread's launch holds
// the pool, runs its tasks in the calling thread.
//
// C-style C++ (the linker driver compiles it), pthreads and GCC's __atomic builtins: the cross compilers take it.

#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <time.h>
#include <tvm/ffi/c_api.h>

typedef struct {
  void* sync_handle;
  int32_t num_task;
} ParallelEnv;  // TVMParallelGroupEnv
typedef int (*ParallelLambda)(int task_id, ParallelEnv* env, void* cdata);

// Set by the TVM runtime at load; weak, so that a module with no parallel loop (or with TVM's barrier, which
// this pool does not provide) links and keeps TVM's pool.
extern "C" {
extern void* __TVMBackendParallelLaunch __attribute__((weak));
extern void* __TVMBackendParallelBarrier __attribute__((weak));
}

namespace {

const int kMaxThreads = 256;
const int64_t kPauseNs = 1000000;      // a worker spins on `pause` this long after its last job,
const int64_t kSpinNs = 100000000;     // then on sched_yield (any other thread may take the core), then sleeps
const int64_t kJoinSpinNs = 50000;     // the caller spins this long for the workers, then also yields

int threads = 1;  // the caller and the workers; 1 until started
pthread_t workers[kMaxThreads];
pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
uint64_t generation = 0;  // bumped once per job (and to stop)
uint64_t first_generation = 0;  // when the workers started (a forked child may start them anew)
int busy = 0;             // a launch holds the pool
int pending = 0;          // workers yet to finish the current job
int sleepers = 0;         // workers waiting on `wake`
int failed = 0;           // a worker's task failed
TVMFFIObjectHandle job_error = 0;  // the first error a worker's task raised
int stopping = 0;
ParallelLambda job = 0;
void* job_data = 0;
int job_tasks = 0;

inline void relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  __asm__ __volatile__("yield");
#endif
}

inline int64_t now_ns() {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

bool run_tasks(int first) {  // false if a task failed: its error is raised in this thread
  ParallelEnv env = {0, job_tasks};
  for (int task = first; task < job_tasks; task += threads) {
    if (job(task, &env, job_data) != 0) return false;
  }
  return true;
}

int run_inline(ParallelLambda fn, void* cdata, int tasks) {
  ParallelEnv env = {0, tasks};
  int status = 0;
  for (int task = 0; task < tasks; ++task) status |= fn(task, &env, cdata);
  return status ? -1 : 0;
}

void* worker_main(void* arg) {
  int id = (int)(intptr_t)arg;
  uint64_t seen = first_generation;
  for (;;) {
    uint64_t current;
    int64_t since = now_ns();
    int64_t idle = 0;
    for (int spins = 1; (current = __atomic_load_n(&generation, __ATOMIC_ACQUIRE)) == seen; ++spins) {
      if (idle > kPauseNs) sched_yield();
      else relax();
      if (spins % 256 == 0) idle = now_ns() - since;
      if (idle > kSpinNs) {
        pthread_mutex_lock(&mutex);
        __atomic_add_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
        while (__atomic_load_n(&generation, __ATOMIC_SEQ_CST) == seen) pthread_cond_wait(&wake, &mutex);
        __atomic_sub_fetch(&sleepers, 1, __ATOMIC_SEQ_CST);
        pthread_mutex_unlock(&mutex);
        since = now_ns();
        idle = 0;
      }
    }
    seen = current;
    if (__atomic_load_n(&stopping, __ATOMIC_ACQUIRE)) return 0;
    if (id < job_tasks && !run_tasks(id)) {  // hand the error to the launching thread
      TVMFFIObjectHandle error = 0;
      TVMFFIErrorMoveFromRaised(&error);
      TVMFFIObjectHandle none = 0;
      if (error && !__atomic_compare_exchange_n(&job_error, &none, error, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        TVMFFIObjectDecRef(error);  // another task's error is reported
      __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
    }
    __atomic_sub_fetch(&pending, 1, __ATOMIC_RELEASE);
  }
}

void publish() {  // a new generation: a job, or the stop
  __atomic_add_fetch(&generation, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&sleepers, __ATOMIC_SEQ_CST) > 0) {
    pthread_mutex_lock(&mutex);
    pthread_cond_broadcast(&wake);
    pthread_mutex_unlock(&mutex);
  }
}

int parallel_launch(ParallelLambda fn, void* cdata, int num_task) {
  int tasks = num_task > 0 ? num_task : threads;
  if (threads == 1 || __atomic_exchange_n(&busy, 1, __ATOMIC_ACQUIRE)) return run_inline(fn, cdata, tasks);
  job = fn;
  job_data = cdata;
  job_tasks = tasks;
  failed = 0;
  job_error = 0;
  __atomic_store_n(&pending, threads - 1, __ATOMIC_RELAXED);
  publish();
  bool ok = run_tasks(0);
  int64_t since = 0;
  for (int spins = 1; __atomic_load_n(&pending, __ATOMIC_ACQUIRE) > 0; ++spins) {
    relax();
    if (spins % 256 == 0) {
      if (since == 0) since = now_ns();
      else if (now_ns() - since > kJoinSpinNs) sched_yield();  // a worker may have lost its core
    }
  }
  TVMFFIObjectHandle error = job_error;
  if (ok && error) TVMFFIErrorSetRaised(error);  // the caller's own error, if any, is the one reported
  if (error) TVMFFIObjectDecRef(error);
  if (ok && !error && failed) TVMFFIErrorSetRaisedFromCStr("RuntimeError", "a parallel task failed");
  __atomic_store_n(&busy, 0, __ATOMIC_RELEASE);
  return ok && !failed ? 0 : -1;
}

void forget_workers() {  // a forked child has none of them: its launches run inline
  threads = 1;
  busy = 0;
}

__attribute__((destructor)) void stop_workers() {  // at dlclose or exit, before this code is unmapped
  if (threads == 1) return;
  __atomic_store_n(&stopping, 1, __ATOMIC_RELEASE);
  publish();
  for (int i = 1; i < threads; ++i) pthread_join(workers[i], 0);
  threads = 1;
}

int start(int wanted) {  // under the mutex: two threads may load the library at once
  pthread_mutex_lock(&mutex);
  int started = threads;
  if (started == 1) {
    first_generation = __atomic_load_n(&generation, __ATOMIC_RELAXED);
    while (started < wanted && pthread_create(&workers[started], 0, worker_main, (void*)(intptr_t)started) == 0) ++started;
    threads = started;
    if (started > 1) pthread_atfork(0, 0, forget_workers);
  }
  pthread_mutex_unlock(&mutex);
  return started > 1;
}

}  // namespace

// mnet_thread_pool(threads: int) -> int: start the pool and point TVM's launches at it; 1 if it now runs
// them, 0 where TVM's pool stays (fewer than 2 threads, no parallel loop, a kernel that uses TVM's barrier,
// no thread could start). The first call's count stays for the life of the library.
extern "C" int __tvm_ffi_mnet_thread_pool(void*, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  int installed = 0;
  if (num_args == 1 && args[0].type_index == kTVMFFIInt && args[0].v_int64 >= 2 &&
      &__TVMBackendParallelLaunch != 0 && &__TVMBackendParallelBarrier == 0) {
    installed = start(args[0].v_int64 < kMaxThreads ? (int)args[0].v_int64 : kMaxThreads);
    if (installed) __TVMBackendParallelLaunch = (void*)parallel_launch;
  }
  result->type_index = kTVMFFIInt;
  result->zero_padding = 0;
  result->v_int64 = installed;
  return 0;
}
