// mnet-run: load a mnet-compile artifact (.so) with the TVM runtime and run it once or many times.
//
// Uses only the tvm_ffi headers of the apache-tvm-ffi wheel and links libtvm_ffi.so + libtvm_runtime.so
// (both from the apache-tvm / apache-tvm-ffi wheels of the device's architecture); no Python at run time.
//
//   mnet-run MODEL.so [--input x.npy|x.bin] [--shape 1,3,224,224] [--output logits.bin|.npy]
//            [--device cpu|cuda] [--device-id N] [--alloc pooled|naive] [--repeat N] [--warmup N] [--topk K]
//            [--public-key KEY.pub | --no-verify]
//
// Before the library is opened, it is checked against the manifest.json beside it, as the Python loader
// does (trust.h): listed there under its file name, size and sha256 equal, built for this CPU architecture;
// with --public-key, manifest.sig must be that key's Ed25519 signature of manifest.json. --no-verify skips
// all of this (a bare .so without its manifest). Without --input the input is all zeros of the manifest's
// input shape. A .bin input is raw little-endian float32 of the manifest's shape (or --shape; unchecked,
// (1, 3, R, R) from the file size). An input holding NaN or infinity is refused. Prints the output shape,
// the top-K classes and timings; the last line "mnet-run: ok" means success.
// Unless TVM_NUM_THREADS or OMP_NUM_THREADS is set, the thread pool gets one thread per physical core
// (TVM's own default halves the logical CPUs on x86: one thread on a 2-vCPU VM).
// Exit codes: 0 ok, 1 runtime error, 2 usage error, 3 the artifact failed its check.

#include <dlfcn.h>
#include <sched.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include "trust.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <numeric>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;

namespace {

constexpr int kNaiveAllocator = 1;
constexpr int kPooledAllocator = 2;

struct Options {
  std::string model;
  std::string input;
  std::string output;
  std::vector<int64_t> shape;
  std::string device = "cpu";
  int device_id = 0;
  int alloc = kPooledAllocator;
  int repeat = 1;
  int warmup = 0;
  int topk = 5;
  bool verify = true;
  std::string public_key;
};

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

const char* kUsage =
    "usage: mnet-run MODEL.so [--input x.npy|x.bin] [--shape 1,3,224,224] [--output logits.bin|.npy]\n"
    "                [--device cpu|cuda] [--device-id N] [--alloc pooled|naive] [--repeat N] [--warmup N]\n"
    "                [--topk K] [--public-key KEY.pub | --no-verify]\n"
    "exit codes: 0 ok, 1 runtime error, 2 usage error, 3 the artifact failed its check (checksum, signature, arch)\n";

std::vector<int64_t> ParseShape(const std::string& text) {
  std::vector<int64_t> dims;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    char* end = nullptr;
    long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v <= 0) throw UsageError("bad --shape " + text);
    dims.push_back(v);
  }
  if (dims.empty()) throw UsageError("bad --shape " + text);
  return dims;
}

int ParseInt(const std::string& flag, const std::string& text, int minimum) {
  char* end = nullptr;
  long v = std::strtol(text.c_str(), &end, 10);
  if (text.empty() || *end != '\0' || v < minimum) throw UsageError("bad value for " + flag + ": " + text);
  return static_cast<int>(v);
}

Options ParseArgs(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw UsageError(a + " needs a value");
      return argv[++i];
    };
    if (a == "-h" || a == "--help") {
      std::cout << kUsage;
      std::exit(0);
    } else if (a == "--input") {
      o.input = value();
    } else if (a == "--output") {
      o.output = value();
    } else if (a == "--shape") {
      o.shape = ParseShape(value());
    } else if (a == "--device") {
      o.device = value();
      if (o.device != "cpu" && o.device != "cuda") throw UsageError("--device must be cpu or cuda");
    } else if (a == "--device-id") {
      o.device_id = ParseInt(a, value(), 0);
    } else if (a == "--alloc") {
      std::string v = value();
      if (v == "pooled") {
        o.alloc = kPooledAllocator;
      } else if (v == "naive") {
        o.alloc = kNaiveAllocator;
      } else {
        throw UsageError("--alloc must be pooled or naive");
      }
    } else if (a == "--repeat") {
      o.repeat = ParseInt(a, value(), 1);
    } else if (a == "--warmup") {
      o.warmup = ParseInt(a, value(), 0);
    } else if (a == "--topk") {
      o.topk = ParseInt(a, value(), 0);
    } else if (a == "--public-key") {
      o.public_key = value();
    } else if (a == "--no-verify") {
      o.verify = false;
    } else if (!a.empty() && a[0] == '-') {
      throw UsageError("unknown option " + a);
    } else if (o.model.empty()) {
      o.model = a;
    } else {
      throw UsageError("unexpected argument " + a);
    }
  }
  if (o.model.empty()) throw UsageError("no model .so given");
  if (!o.verify && !o.public_key.empty()) throw UsageError("--public-key verifies the artifact; it cannot go with --no-verify");
  // dlopen searches the library path for a bare name: make a relative path explicit.
  if (o.model.find('/') == std::string::npos) o.model = "./" + o.model;
  return o;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// A .npy file (version 1-3) holding little-endian float32 in C order.
std::vector<float> ReadNpy(const std::string& path, std::vector<int64_t>* shape) {
  std::string data = ReadFile(path);
  if (data.size() < 10 || data.compare(0, 6, "\x93NUMPY") != 0) throw std::runtime_error(path + " is not a .npy file");
  int major = static_cast<unsigned char>(data[6]);
  size_t header_len, offset;
  if (major == 1) {
    header_len = static_cast<unsigned char>(data[8]) | (static_cast<unsigned char>(data[9]) << 8);
    offset = 10;
  } else {
    if (data.size() < 12) throw std::runtime_error(path + ": truncated .npy header");
    header_len = 0;
    for (int k = 0; k < 4; ++k) header_len |= static_cast<size_t>(static_cast<unsigned char>(data[8 + k])) << (8 * k);
    offset = 12;
  }
  if (offset + header_len > data.size()) throw std::runtime_error(path + ": truncated .npy header");
  std::string header = data.substr(offset, header_len);
  if (header.find("'descr': '<f4'") == std::string::npos)
    throw std::runtime_error(path + ": the .npy array must be little-endian float32 ('<f4')");
  if (header.find("'fortran_order': False") == std::string::npos)
    throw std::runtime_error(path + ": the .npy array must be in C order");
  size_t open = header.find('(', header.find("'shape'")), close = header.find(')', open);
  if (open == std::string::npos || close == std::string::npos) throw std::runtime_error(path + ": no shape in .npy header");
  shape->clear();
  std::stringstream ss(header.substr(open + 1, close - open - 1));
  std::string item;
  while (std::getline(ss, item, ',')) {
    item.erase(std::remove(item.begin(), item.end(), ' '), item.end());
    if (!item.empty()) shape->push_back(std::stoll(item));
  }
  int64_t count = std::accumulate(shape->begin(), shape->end(), int64_t{1}, std::multiplies<int64_t>());
  size_t body = offset + header_len;
  if (data.size() - body != static_cast<size_t>(count) * sizeof(float))
    throw std::runtime_error(path + ": .npy data size does not match its shape");
  std::vector<float> values(count);
  std::memcpy(values.data(), data.data() + body, count * sizeof(float));
  return values;
}

std::vector<float> ReadInput(const Options& o, std::vector<int64_t>* shape) {
  if (EndsWith(o.input, ".npy")) {
    std::vector<float> v = ReadNpy(o.input, shape);
    if (!o.shape.empty() && o.shape != *shape) throw UsageError("--shape does not match the .npy shape");
    return v;
  }
  std::string data = ReadFile(o.input);
  if (data.size() % sizeof(float)) throw std::runtime_error(o.input + ": size is not a multiple of 4 bytes");
  size_t count = data.size() / sizeof(float);
  if (!o.shape.empty()) {
    *shape = o.shape;
  } else {  // (1, 3, R, R): a MobileNet input
    int64_t r = static_cast<int64_t>(std::llround(std::sqrt(count / 3.0)));
    if (static_cast<size_t>(3 * r * r) != count)
      throw UsageError(o.input + " does not hold a (1, 3, R, R) image; give --shape");
    *shape = {1, 3, r, r};
  }
  int64_t expect = std::accumulate(shape->begin(), shape->end(), int64_t{1}, std::multiplies<int64_t>());
  if (static_cast<size_t>(expect) != count) throw UsageError(o.input + ": size does not match --shape");
  std::vector<float> values(count);
  std::memcpy(values.data(), data.data(), data.size());
  return values;
}

void WriteOutput(const std::string& path, const std::vector<float>& values, const std::vector<int64_t>& shape) {
  std::ofstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot write " + path);
  if (EndsWith(path, ".npy")) {
    std::string dims;
    for (size_t k = 0; k < shape.size(); ++k) dims += std::to_string(shape[k]) + (shape.size() == 1 || k + 1 < shape.size() ? "," : "");
    std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
    size_t total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header += '\n';
    f.write("\x93NUMPY\x01\x00", 8);
    unsigned char len[2] = {static_cast<unsigned char>(header.size() & 0xff), static_cast<unsigned char>(header.size() >> 8)};
    f.write(reinterpret_cast<const char*>(len), 2);
    f.write(header.data(), header.size());
  }
  f.write(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t k = 0; k < shape.size(); ++k) s += (k ? ", " : "") + std::to_string(shape[k]);
  return s + ")";
}

double Ms(std::chrono::steady_clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

// The first tensor of what "main" returns: a tensor, or a tuple (logits,) as an Array.
ffi::Tensor FirstTensor(const ffi::Any& result) {
  if (auto t = result.as<ffi::Tensor>()) return *t;
  if (auto arr = result.try_cast<ffi::Array<ffi::Any>>()) {
    if (arr->size() == 0) throw std::runtime_error("main returned an empty tuple");
    return FirstTensor((*arr)[0]);
  }
  throw std::runtime_error("main returned neither a tensor nor a tuple of tensors (type " + result.GetTypeKey() + ")");
}

// The artifact's own thread pool (export/thread_pool.cc), sized as TVM's would be, as runtime.py starts it;
// false where TVM's pool stays (an older artifact, a GPU build, one thread).
bool StartOwnPool(const ffi::Module& lib) {
  const char* env = std::getenv("TVM_NUM_THREADS");
  if (!env) env = std::getenv("OMP_NUM_THREADS");
  int64_t threads = env ? std::atoll(env) : 0;
  if (threads < 2) return false;
  ffi::Optional<ffi::Function> pool = lib->GetFunction("mnet_thread_pool", true);
  return pool && (*pool)(threads).cast<int64_t>() != 0;
}

int Run(const Options& o) {
  DLDevice dev{o.device == "cuda" ? kDLCUDA : kDLCPU, o.device_id};
  if (o.device == "cuda") {
    // The CUDA device API and the loader of the embedded GPU code live in a sidecar library.
    if (!dlopen("libtvm_runtime_cuda.so", RTLD_NOW | RTLD_GLOBAL))
      throw std::runtime_error(std::string("cannot load libtvm_runtime_cuda.so: ") + dlerror());
  }

  Options opt = o;
  mnet_trust::Verified verified;
  if (o.verify) {  // before dlopen: a library runs code as soon as it is opened
    verified = mnet_trust::VerifyArtifact(o.model, o.public_key);
    if (verified.input_dtype != "float32")
      throw std::runtime_error("the manifest's input dtype is " + verified.input_dtype + "; mnet-run feeds float32 only");
    if (!opt.shape.empty() && opt.shape != verified.input_shape)
      throw UsageError("--shape " + ShapeText(opt.shape) + " is not the manifest's input shape " + ShapeText(verified.input_shape));
    opt.shape = verified.input_shape;
    std::printf("verified: %s sha256 %s%s\n", o.model.c_str(), verified.sha256.c_str(),
                verified.key_fingerprint.empty() ? "" : (", signed by key " + verified.key_fingerprint).c_str());
  }

  auto t0 = std::chrono::steady_clock::now();
  ffi::Module lib = ffi::Module::LoadFromFile(o.model);
  ffi::Optional<ffi::Function> loader = lib->GetFunction("vm_load_executable", true);
  if (!loader) throw std::runtime_error(o.model + " is not a Relax VM library (no vm_load_executable)");
  bool own_pool = dev.device_type == kDLCPU && StartOwnPool(lib);  // before any kernel runs
  ffi::Module vm = (*loader)().cast<ffi::Module>();
  ffi::Function init = vm->GetFunction("vm_initialization", false).value();
  if (dev.device_type == kDLCPU) {
    init(static_cast<int>(kDLCPU), o.device_id, o.alloc);
  } else {  // the VM also needs the CPU, for shape functions
    init(static_cast<int>(dev.device_type), o.device_id, o.alloc, static_cast<int>(kDLCPU), 0, o.alloc);
  }
  ffi::Optional<ffi::Function> main_fn = vm->GetFunction("main", false);
  if (!main_fn) throw std::runtime_error(o.model + " has no function main");
  auto t1 = std::chrono::steady_clock::now();

  std::vector<int64_t> in_shape = opt.shape;
  std::vector<float> input;
  if (!o.input.empty()) {
    input = ReadInput(opt, &in_shape);
    if (o.verify && in_shape != verified.input_shape)
      throw std::runtime_error("input " + o.input + " has shape " + ShapeText(in_shape) + ", the manifest's is " +
                               ShapeText(verified.input_shape));
  } else {
    if (in_shape.empty()) throw UsageError("give --input or --shape");
    input.assign(std::accumulate(in_shape.begin(), in_shape.end(), int64_t{1}, std::multiplies<int64_t>()), 0.0f);
  }
  // NaN or infinity in: the compiled ReLUs would turn it into plausible logits; refuse, as runtime.py does
  size_t bad = static_cast<size_t>(std::count_if(input.begin(), input.end(), [](float v) { return !std::isfinite(v); }));
  if (bad) throw std::runtime_error("input holds " + std::to_string(bad) + " NaN or infinite value" + (bad > 1 ? "s" : "") + "; refusing to run on it");

  // Device-generic tensors through the runtime's registered functions (CPU or GPU memory alike).
  ffi::Function alloc = ffi::Function::GetGlobalRequired("runtime.TVMTensorAllocWithScope");
  ffi::Function copy_in = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyFromBytes");
  ffi::Function copy_out = ffi::Function::GetGlobalRequired("runtime.TVMTensorCopyToBytes");
  DLDataType f32{kDLFloat, 32, 1};
  ffi::Tensor x = alloc(ffi::Shape(in_shape), f32, dev, nullptr).cast<ffi::Tensor>();
  copy_in(x, static_cast<void*>(input.data()), static_cast<int64_t>(input.size() * sizeof(float)));

  std::vector<double> times;
  ffi::Any result;
  for (int k = 0; k < o.warmup + o.repeat; ++k) {
    auto s = std::chrono::steady_clock::now();
    result = (*main_fn)(x);
    ffi::Tensor y = FirstTensor(result);
    if (dev.device_type != kDLCPU) {  // wait for the GPU: copying the result synchronizes
      std::vector<float> sink(1);
      copy_out(y, static_cast<void*>(sink.data()), static_cast<int64_t>(sizeof(float)));
    }
    if (k >= o.warmup) times.push_back(Ms(std::chrono::steady_clock::now() - s));
  }

  ffi::Tensor y = FirstTensor(result);
  if (y.dtype().code != kDLFloat || y.dtype().bits != 32) throw std::runtime_error("output is not float32");
  std::vector<int64_t> out_shape(y.shape().begin(), y.shape().end());
  int64_t n = std::accumulate(out_shape.begin(), out_shape.end(), int64_t{1}, std::multiplies<int64_t>());
  std::vector<float> logits(n);
  copy_out(y, static_cast<void*>(logits.data()), static_cast<int64_t>(n * sizeof(float)));

  std::printf("model: %s\n", o.model.c_str());
  std::printf("device: %s:%d\n", o.device.c_str(), o.device_id);
  std::printf("threads: %lld (%s pool)\n", ffi::Function::GetGlobalRequired("runtime.NumThreads")().cast<int64_t>(),
              own_pool ? "the artifact's" : "TVM's");
  std::printf("input: %s float32\n", ShapeText(in_shape).c_str());
  std::printf("output: %s float32\n", ShapeText(out_shape).c_str());
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  int k = static_cast<int>(std::min<int64_t>(o.topk, n));
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int64_t a, int64_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  std::printf("top%d:", k);
  for (int i = 0; i < k; ++i) std::printf(" %lld:%.6g", static_cast<long long>(order[i]), logits[order[i]]);
  std::printf("\n");
  std::vector<double> sorted = times;
  std::sort(sorted.begin(), sorted.end());
  std::printf("load_ms: %.3f\n", Ms(t1 - t0));
  std::printf("run_ms: median %.3f min %.3f max %.3f (repeat %d, warmup %d)\n", sorted[sorted.size() / 2], sorted.front(),
              sorted.back(), o.repeat, o.warmup);
  if (!o.output.empty()) {
    WriteOutput(o.output, logits, out_shape);
    std::printf("wrote: %s\n", o.output.c_str());
  }
  std::printf("mnet-run: ok\n");
  return 0;
}

// One thread per physical core this process may run on, as the Python loader's use_all_cores does.
void UseAllCores() {
  if (std::getenv("TVM_NUM_THREADS") || std::getenv("OMP_NUM_THREADS")) return;
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) != 0) return;
  std::set<std::string> cores;
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (!CPU_ISSET(cpu, &set)) continue;
    std::ifstream f("/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/thread_siblings_list");
    std::string siblings;
    if (!std::getline(f, siblings)) return;
    cores.insert(siblings);
  }
  if (!cores.empty()) setenv("TVM_NUM_THREADS", std::to_string(cores.size()).c_str(), 0);
}

}  // namespace

int main(int argc, char** argv) {
  UseAllCores();
  try {
    return Run(ParseArgs(argc, argv));
  } catch (const UsageError& e) {
    std::fprintf(stderr, "mnet-run: %s\n%s", e.what(), kUsage);
    return 2;
  } catch (const mnet_trust::VerifyError& e) {
    std::fprintf(stderr, "mnet-run: error: %s\n", e.what());
    return 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mnet-run: error: %s\n", e.what());
    return 1;
  }
}
