// trust.h: what mnet-run needs to trust an artifact, with nothing beyond the C++ standard library (no
// crypto library to cross-compile for a board): SHA-256 (file checksums), SHA-512 and Ed25519 signature
// verification (RFC 8032), a strict small JSON reader (the manifest) and the artifact check itself.
//
// Written for mnet-compile and tested against Python's hashlib and the `cryptography` package
// (tests/test_trust.py). Verification only: no secret ever passes through this code, so nothing here
// needs to run in constant time.
#pragma once

#include <sys/stat.h>

#include <array>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace mnet_trust {

// ------------------------------------------------------------------------------------------ SHA-2

inline uint32_t Rotr32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
inline uint64_t Rotr64(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

class Sha256 {
 public:
  Sha256() {
    static const uint32_t kInit[8] = {
    0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au, 0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
    };
    std::memcpy(h_, kInit, sizeof(h_));
  }
  void Update(const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    total_ += n;
    while (n > 0) {
      size_t take = n < 64 - fill_ ? n : 64 - fill_;
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == 64) {
        Block(buf_);
        fill_ = 0;
      }
    }
  }
  std::array<uint8_t, 32> Final() {
    uint64_t bits = total_ * 8;
    uint8_t pad = 0x80, zero = 0;
    Update(&pad, 1);
    while (fill_ != 56) Update(&zero, 1);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    Update(len, 8);
    std::array<uint8_t, 32> out;
    for (int i = 0; i < 32; ++i) out[i] = static_cast<uint8_t>(h_[i / 4] >> (24 - 8 * (i % 4)));
    return out;
  }

 private:
  void Block(const uint8_t* b) {
    static const uint32_t kK[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
    };
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = (uint32_t{b[4 * i]} << 24) | (uint32_t{b[4 * i + 1]} << 16) | (uint32_t{b[4 * i + 2]} << 8) | b[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      uint32_t s0 = Rotr32(w[i - 15], 7) ^ Rotr32(w[i - 15], 18) ^ (w[i - 15] >> 3);
      uint32_t s1 = Rotr32(w[i - 2], 17) ^ Rotr32(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      uint32_t t1 = h + (Rotr32(e, 6) ^ Rotr32(e, 11) ^ Rotr32(e, 25)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
      uint32_t t2 = (Rotr32(a, 2) ^ Rotr32(a, 13) ^ Rotr32(a, 22)) + ((a & bb) ^ (a & c) ^ (bb & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h_[0] += a, h_[1] += bb, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  uint32_t h_[8];
  uint8_t buf_[64];
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

class Sha512 {
 public:
  Sha512() {
    static const uint64_t kInit[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
    };
    std::memcpy(h_, kInit, sizeof(h_));
  }
  void Update(const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    total_ += n;
    while (n > 0) {
      size_t take = n < 128 - fill_ ? n : 128 - fill_;
      std::memcpy(buf_ + fill_, p, take);
      fill_ += take;
      p += take;
      n -= take;
      if (fill_ == 128) {
        Block(buf_);
        fill_ = 0;
      }
    }
  }
  std::array<uint8_t, 64> Final() {
    uint64_t bits = total_ * 8;  // messages here are far below 2^61 bytes: the high 64 length bits are 0
    uint8_t pad = 0x80, zero = 0;
    Update(&pad, 1);
    while (fill_ != 112) Update(&zero, 1);
    uint8_t len[16] = {0};  // a 128-bit big-endian bit count
    for (int i = 0; i < 8; ++i) len[8 + i] = static_cast<uint8_t>(bits >> (56 - 8 * i));
    Update(len, 16);
    std::array<uint8_t, 64> out;
    for (int i = 0; i < 64; ++i) out[i] = static_cast<uint8_t>(h_[i / 8] >> (56 - 8 * (i % 8)));
    return out;
  }

 private:
  void Block(const uint8_t* b) {
    static const uint64_t kK[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL, 0xe9b5dba58189dbbcULL,
    0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL, 0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL,
    0xd807aa98a3030242ULL, 0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL, 0xc19bf174cf692694ULL,
    0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL, 0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL,
    0x2de92c6f592b0275ULL, 0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL, 0xbf597fc7beef0ee4ULL,
    0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL, 0x06ca6351e003826fULL, 0x142929670a0e6e70ULL,
    0x27b70a8546d22ffcULL, 0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL, 0x92722c851482353bULL,
    0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL, 0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL,
    0xd192e819d6ef5218ULL, 0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL, 0x34b0bcb5e19b48a8ULL,
    0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL, 0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL,
    0x748f82ee5defb2fcULL, 0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL, 0xc67178f2e372532bULL,
    0xca273eceea26619cULL, 0xd186b8c721c0c207ULL, 0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL,
    0x06f067aa72176fbaULL, 0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL, 0x431d67c49c100d4cULL,
    0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL, 0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL,
    };
    uint64_t w[80];
    for (int i = 0; i < 16; ++i) {
      w[i] = 0;
      for (int k = 0; k < 8; ++k) w[i] = (w[i] << 8) | b[8 * i + k];
    }
    for (int i = 16; i < 80; ++i) {
      uint64_t s0 = Rotr64(w[i - 15], 1) ^ Rotr64(w[i - 15], 8) ^ (w[i - 15] >> 7);
      uint64_t s1 = Rotr64(w[i - 2], 19) ^ Rotr64(w[i - 2], 61) ^ (w[i - 2] >> 6);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint64_t a = h_[0], bb = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 80; ++i) {
      uint64_t t1 = h + (Rotr64(e, 14) ^ Rotr64(e, 18) ^ Rotr64(e, 41)) + ((e & f) ^ (~e & g)) + kK[i] + w[i];
      uint64_t t2 = (Rotr64(a, 28) ^ Rotr64(a, 34) ^ Rotr64(a, 39)) + ((a & bb) ^ (a & c) ^ (bb & c));
      h = g;
      g = f;
      f = e;
      e = d + t1;
      d = c;
      c = bb;
      bb = a;
      a = t1 + t2;
    }
    h_[0] += a, h_[1] += bb, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }
  uint64_t h_[8];
  uint8_t buf_[128];
  size_t fill_ = 0;
  uint64_t total_ = 0;
};

inline std::string Hex(const uint8_t* data, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += kDigits[data[i] >> 4];
    s += kDigits[data[i] & 15];
  }
  return s;
}

// Decodes exactly out_len bytes from 2 * out_len hex digits; false on anything else.
inline bool FromHex(const std::string& text, uint8_t* out, size_t out_len) {
  if (text.size() != 2 * out_len) return false;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (size_t i = 0; i < out_len; ++i) {
    int hi = nibble(text[2 * i]), lo = nibble(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  return true;
}

// SHA-256 of a file, read in 1 MB chunks; throws std::runtime_error if it cannot be read.
inline std::string Sha256File(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw std::runtime_error("cannot read " + path);
  Sha256 sha;
  std::vector<uint8_t> buf(1 << 20);
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) sha.Update(buf.data(), n);
  if (std::ferror(f.get())) throw std::runtime_error("cannot read " + path);
  auto digest = sha.Final();
  return Hex(digest.data(), digest.size());
}

// ------------------------------------------------------------------------ Ed25519 (RFC 8032) verify
//
// Field elements mod p = 2^255 - 19 as 16 limbs of 16 bits in int64 (portable: no 128-bit integers,
// so the same code serves 32-bit boards). Limbs stay non-negative: subtraction adds 8p first.

namespace ed25519 {

using Fe = std::array<int64_t, 16>;

inline void Carry(Fe& o) {
  for (int i = 0; i < 16; ++i) {
    int64_t c = o[i] >> 16;
    o[i] &= 0xffff;
    if (i < 15) {
      o[i + 1] += c;
    } else {
      o[0] += 38 * c;  // 2^256 = 38 (mod p)
    }
  }
}

inline void Add(Fe& o, const Fe& a, const Fe& b) {
  for (int i = 0; i < 16; ++i) o[i] = a[i] + b[i];
  Carry(o);
}

inline void Sub(Fe& o, const Fe& a, const Fe& b) {  // a + 8p - b: non-negative, as b's limbs are < 2^17
  static const int64_t k8p[16] = {0x7ff68, 0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8,
                                  0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8, 0x7fff8, 0x3fff8};
  for (int i = 0; i < 16; ++i) o[i] = a[i] + k8p[i] - b[i];
  Carry(o);  // every limb stays below 2^17 after any operation
}

inline void Mul(Fe& o, const Fe& a, const Fe& b) {
  int64_t t[31] = {0};
  for (int i = 0; i < 16; ++i)
    for (int j = 0; j < 16; ++j) t[i + j] += a[i] * b[j];
  for (int i = 0; i < 15; ++i) t[i] += 38 * t[i + 16];
  for (int i = 0; i < 16; ++i) o[i] = t[i];
  Carry(o);
  Carry(o);
}

// The canonical 32-byte little-endian encoding (fully reduced mod p).
inline std::array<uint8_t, 32> Pack(const Fe& a) {
  Fe t = a;
  for (;;) {
    Carry(t);
    bool done = true;
    for (int i = 0; i < 16; ++i) done = done && t[i] <= 0xffff;
    if (done) break;
  }
  for (int j = 0; j < 2; ++j) {  // t < 2^256 = 2p + 38: subtract p at most twice
    Fe m;
    m[0] = t[0] - 0xffed;
    for (int i = 1; i < 15; ++i) {
      m[i] = t[i] - 0xffff - ((m[i - 1] >> 16) & 1);
      m[i - 1] &= 0xffff;
    }
    m[15] = t[15] - 0x7fff - ((m[14] >> 16) & 1);
    int64_t borrow = (m[15] >> 16) & 1;
    m[14] &= 0xffff;
    m[15] &= 0xffff;
    if (!borrow) t = m;
  }
  std::array<uint8_t, 32> out;
  for (int i = 0; i < 16; ++i) {
    out[2 * i] = static_cast<uint8_t>(t[i] & 0xff);
    out[2 * i + 1] = static_cast<uint8_t>(t[i] >> 8);
  }
  return out;
}

inline Fe Unpack(const uint8_t* b) {  // the top bit (a sign, in point encodings) is ignored
  Fe o;
  for (int i = 0; i < 16; ++i) o[i] = b[2 * i] + (int64_t{b[2 * i + 1]} << 8);
  o[15] &= 0x7fff;
  return o;
}

inline Fe FromInt(int64_t v) {
  Fe o{};
  o[0] = v & 0xffff;
  o[1] = v >> 16;
  return o;
}

inline bool Equal(const Fe& a, const Fe& b) { return Pack(a) == Pack(b); }
inline int Parity(const Fe& a) { return Pack(a)[0] & 1; }
inline bool IsZero(const Fe& a) { return Pack(a) == std::array<uint8_t, 32>{}; }

// a^e, e a 32-byte little-endian exponent.
inline Fe Pow(const Fe& a, const uint8_t* e) {
  Fe r = FromInt(1);
  for (int bit = 255; bit >= 0; --bit) {
    Mul(r, r, r);
    if ((e[bit / 8] >> (bit % 8)) & 1) Mul(r, r, a);
  }
  return r;
}

struct Exponents {
  uint8_t p_minus_2[32], p_minus_5_over_8[32], p_minus_1_over_4[32];
  Exponents() {
    std::memset(this, 0xff, sizeof(*this));
    p_minus_2[0] = 0xeb, p_minus_2[31] = 0x7f;
    p_minus_5_over_8[0] = 0xfd, p_minus_5_over_8[31] = 0x0f;
    p_minus_1_over_4[0] = 0xfb, p_minus_1_over_4[31] = 0x1f;
  }
};

struct Point {
  Fe x, y, z, t;  // extended coordinates: x = X/Z, y = Y/Z, x*y = T/Z
};

struct Curve {
  Exponents e;
  Fe zero{}, one = FromInt(1), d, d2, sqrt_m1;
  Point base;
  Curve() {
    Fe num = FromInt(121665), den = FromInt(121666), q;
    Mul(q, num, Pow(den, e.p_minus_2));
    Sub(d, zero, q);  // d = -121665 / 121666
    Add(d2, d, d);
    sqrt_m1 = Pow(FromInt(2), e.p_minus_1_over_4);
    uint8_t b[32];
    std::memset(b, 0x66, sizeof(b));
    b[0] = 0x58;  // y = 4/5, x even
    Decode(base, b);
  }

  void AddPoints(Point& r, const Point& p, const Point& q) const {
    Fe a, b, c, dd, t, e2, f, g, h;
    Sub(a, p.y, p.x);
    Sub(t, q.y, q.x);
    Mul(a, a, t);
    Add(b, p.x, p.y);
    Add(t, q.x, q.y);
    Mul(b, b, t);
    Mul(c, p.t, q.t);
    Mul(c, c, d2);
    Mul(dd, p.z, q.z);
    Add(dd, dd, dd);
    Sub(e2, b, a);
    Sub(f, dd, c);
    Add(g, dd, c);
    Add(h, b, a);
    Mul(r.x, e2, f);
    Mul(r.y, h, g);
    Mul(r.z, g, f);
    Mul(r.t, e2, h);
  }

  Point ScalarMult(const Point& p, const uint8_t* s) const {  // s: 32 bytes little-endian
    Point r{zero, one, one, zero};
    for (int bit = 255; bit >= 0; --bit) {
      AddPoints(r, r, r);
      if ((s[bit / 8] >> (bit % 8)) & 1) AddPoints(r, r, p);
    }
    return r;
  }

  std::array<uint8_t, 32> Encode(const Point& p) const {
    Fe zi = Pow(p.z, e.p_minus_2), x, y;
    Mul(x, p.x, zi);
    Mul(y, p.y, zi);
    auto out = Pack(y);
    out[31] ^= static_cast<uint8_t>(Parity(x) << 7);
    return out;
  }

  bool Decode(Point& p, const uint8_t* s) const {
    static const uint8_t kP[32] = {0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f};
    for (int i = 31; i >= 0; --i) {  // y must be canonical: y < p
      uint8_t byte = i == 31 ? (s[i] & 0x7f) : s[i];
      if (byte < kP[i]) break;
      if (byte > kP[i] || i == 0) return false;
    }
    int sign = s[31] >> 7;
    Fe y = Unpack(s), y2, u, v, v3, v7, x, t, vx2, minus_u;
    Mul(y2, y, y);
    Sub(u, y2, one);
    Mul(v, d, y2);
    Add(v, v, one);
    Mul(v3, v, v);
    Mul(v3, v3, v);  // v^3
    Mul(v7, v3, v3);
    Mul(v7, v7, v);  // v^7
    Mul(t, u, v7);
    t = Pow(t, e.p_minus_5_over_8);
    Mul(x, t, u);
    Mul(x, x, v3);  // x = u v^3 (u v^7)^((p-5)/8)
    Mul(vx2, x, x);
    Mul(vx2, vx2, v);
    Sub(minus_u, zero, u);
    if (!Equal(vx2, u)) {
      if (!Equal(vx2, minus_u)) return false;
      Mul(x, x, sqrt_m1);
    }
    if (IsZero(x) && sign) return false;
    if (Parity(x) != sign) Sub(x, zero, x);
    p.x = x;
    p.y = y;
    p.z = one;
    Mul(p.t, x, y);
    return true;
  }
};

inline const Curve& GetCurve() {
  static const Curve curve;
  return curve;
}

// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
constexpr uint8_t kL[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                            0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0x10};

inline bool LessThanL(const uint8_t* s) {
  for (int i = 31; i >= 0; --i) {
    if (s[i] < kL[i]) return true;
    if (s[i] > kL[i]) return false;
  }
  return false;
}

// A 64-byte little-endian number mod L (bitwise long division: slow and simple, once per signature).
inline std::array<uint8_t, 32> ReduceModL(const uint8_t* h) {
  uint32_t r[9] = {0}, l[9] = {0};
  for (int i = 0; i < 32; ++i) l[i / 4] |= uint32_t{kL[i]} << (8 * (i % 4));
  for (int bit = 511; bit >= 0; --bit) {
    uint32_t carry = (h[bit / 8] >> (bit % 8)) & 1;
    for (int i = 0; i < 9; ++i) {
      uint32_t next = r[i] >> 31;
      r[i] = (r[i] << 1) | carry;
      carry = next;
    }
    bool geq = true;
    for (int i = 8; i >= 0; --i) {
      if (r[i] != l[i]) {
        geq = r[i] > l[i];
        break;
      }
    }
    if (geq) {
      uint64_t borrow = 0;
      for (int i = 0; i < 9; ++i) {
        uint64_t diff = uint64_t{r[i]} - l[i] - borrow;
        r[i] = static_cast<uint32_t>(diff);
        borrow = (diff >> 32) & 1;
      }
    }
  }
  std::array<uint8_t, 32> out;
  for (int i = 0; i < 32; ++i) out[i] = static_cast<uint8_t>(r[i / 4] >> (8 * (i % 4)));
  return out;
}

}  // namespace ed25519

// RFC 8032 Ed25519: true iff sig is a valid signature of msg by the public key pk: [S]B == R + [k]A with
// k = SHA-512(R || A || msg) mod L, S < L, A and R compared as encodings (as OpenSSL and libsodium do).
inline bool Ed25519Verify(const uint8_t pk[32], const uint8_t* msg, size_t len, const uint8_t sig[64]) {
  using namespace ed25519;
  const Curve& curve = GetCurve();
  if (!LessThanL(sig + 32)) return false;
  Point a;
  if (!curve.Decode(a, pk)) return false;
  Sub(a.x, curve.zero, a.x);  // -A
  Sub(a.t, curve.zero, a.t);
  Sha512 sha;
  sha.Update(sig, 32);
  sha.Update(pk, 32);
  sha.Update(msg, len);
  auto k = ReduceModL(sha.Final().data());
  Point sb = curve.ScalarMult(curve.base, sig + 32), ka = curve.ScalarMult(a, k.data()), r;
  curve.AddPoints(r, sb, ka);
  auto encoded = curve.Encode(r);
  return std::memcmp(encoded.data(), sig, 32) == 0;
}

// ----------------------------------------------------------------------------------------- keys

inline std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

inline bool Base64Decode(const std::string& text, std::vector<uint8_t>* out) {
  out->clear();
  uint32_t acc = 0;
  int bits = 0, pad = 0;
  for (char c : text) {
    int v;
    if (c >= 'A' && c <= 'Z') v = c - 'A';
    else if (c >= 'a' && c <= 'z') v = c - 'a' + 26;
    else if (c >= '0' && c <= '9') v = c - '0' + 52;
    else if (c == '+') v = 62;
    else if (c == '/') v = 63;
    else if (c == '=') { ++pad; continue; }
    else if (c == ' ' || c == '\n' || c == '\r' || c == '\t') continue;
    else return false;
    if (pad) return false;  // data after padding
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<uint8_t>(acc >> bits));
    }
  }
  return pad <= 2;
}

// A public key file's text: PEM "PUBLIC KEY" (what `mnet-compile keygen` and `openssl pkey -pubout` write)
// or 64 hex digits. False if it is neither or not Ed25519.
inline bool ParsePublicKey(const std::string& file_text, uint8_t out[32]) {
  std::string text = Trim(file_text);
  if (FromHex(text, out, 32)) return true;
  const std::string begin = "-----BEGIN PUBLIC KEY-----", end = "-----END PUBLIC KEY-----";
  if (text.compare(0, begin.size(), begin) != 0) return false;
  size_t stop = text.find(end);
  if (stop == std::string::npos || Trim(text.substr(stop + end.size())) != "") return false;
  std::vector<uint8_t> der;
  if (!Base64Decode(text.substr(begin.size(), stop - begin.size()), &der)) return false;
  static const uint8_t kPrefix[12] = {0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00};
  if (der.size() != 44 || std::memcmp(der.data(), kPrefix, 12) != 0) return false;
  std::memcpy(out, der.data() + 12, 32);
  return true;
}

// ------------------------------------------------------------------------------------------ JSON

struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = kNull;
  bool boolean = false;
  double number = 0;
  bool integral = false;  // a number written without fraction or exponent
  std::string text;       // a string's value
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;

  const Json* Get(const std::string& key) const {
    if (kind != kObject) return nullptr;
    for (const auto& m : members)
      if (m.first == key) return &m.second;
    return nullptr;
  }
};

// A strict RFC 8259 reader: no comments, NaN, trailing commas or duplicate keys; nesting depth <= 64.
class JsonReader {
 public:
  explicit JsonReader(const std::string& s) : s_(s) {}
  Json Parse() {
    Json v = Value(0);
    Space();
    if (i_ != s_.size()) Fail("trailing data");
    return v;
  }

 private:
  [[noreturn]] void Fail(const std::string& what) {
    throw std::runtime_error("invalid JSON (" + what + " at byte " + std::to_string(i_) + ")");
  }
  void Space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }
  bool Literal(const char* word) {
    size_t n = std::strlen(word);
    if (s_.compare(i_, n, word) != 0) return false;
    i_ += n;
    return true;
  }
  Json Value(int depth) {
    if (depth > 64) Fail("nested too deeply");
    Space();
    if (i_ >= s_.size()) Fail("unexpected end");
    Json v;
    char c = s_[i_];
    if (c == '{') {
      v.kind = Json::kObject;
      ++i_;
      Space();
      if (i_ < s_.size() && s_[i_] == '}') {
        ++i_;
        return v;
      }
      for (;;) {
        Space();
        if (i_ >= s_.size() || s_[i_] != '"') Fail("expected a key");
        std::string key = String();
        if (v.Get(key)) Fail("duplicate key");
        Space();
        if (i_ >= s_.size() || s_[i_] != ':') Fail("expected ':'");
        ++i_;
        v.members.emplace_back(key, Value(depth + 1));
        Space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == '}') {
          ++i_;
          return v;
        }
        Fail("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++i_;
      Space();
      if (i_ < s_.size() && s_[i_] == ']') {
        ++i_;
        return v;
      }
      for (;;) {
        v.items.push_back(Value(depth + 1));
        Space();
        if (i_ < s_.size() && s_[i_] == ',') {
          ++i_;
          continue;
        }
        if (i_ < s_.size() && s_[i_] == ']') {
          ++i_;
          return v;
        }
        Fail("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      v.text = String();
      return v;
    }
    if (Literal("true")) {
      v.kind = Json::kBool;
      v.boolean = true;
      return v;
    }
    if (Literal("false")) {
      v.kind = Json::kBool;
      return v;
    }
    if (Literal("null")) return v;
    return Number();
  }
  Json Number() {
    size_t start = i_;
    auto digits = [&]() {
      size_t from = i_;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      return i_ - from;
    };
    if (i_ < s_.size() && s_[i_] == '-') ++i_;
    if (i_ < s_.size() && s_[i_] == '0') {
      ++i_;
    } else if (digits() == 0) {
      Fail("unexpected character");
    }
    bool integral = true;
    if (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      integral = false;
      if (digits() == 0) Fail("bad number");
    }
    if (i_ < s_.size() && (s_[i_] == 'e' || s_[i_] == 'E')) {
      ++i_;
      integral = false;
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) ++i_;
      if (digits() == 0) Fail("bad number");
    }
    Json v;
    v.kind = Json::kNumber;
    v.integral = integral;
    v.number = std::strtod(s_.substr(start, i_ - start).c_str(), nullptr);
    if (!std::isfinite(v.number)) Fail("number out of range");
    return v;
  }
  static void Utf8(std::string* out, uint32_t cp) {
    if (cp < 0x80) {
      *out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      *out += static_cast<char>(0xc0 | (cp >> 6));
      *out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      *out += static_cast<char>(0xe0 | (cp >> 12));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      *out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      *out += static_cast<char>(0xf0 | (cp >> 18));
      *out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      *out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      *out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  uint32_t Hex4() {
    if (i_ + 4 > s_.size()) Fail("bad \\u escape");
    uint8_t b[2];
    if (!FromHex(s_.substr(i_, 4), b, 2)) Fail("bad \\u escape");
    i_ += 4;
    return uint32_t{b[0]} << 8 | b[1];
  }
  std::string String() {
    ++i_;  // the opening quote
    std::string out;
    for (;;) {
      if (i_ >= s_.size()) Fail("unterminated string");
      unsigned char c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return out;
      if (c < 0x20) Fail("control character in string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (i_ >= s_.size()) Fail("unterminated string");
      char e = s_[i_++];
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          uint32_t cp = Hex4();
          if (cp >= 0xd800 && cp < 0xdc00) {  // a surrogate pair
            if (i_ + 2 > s_.size() || s_[i_] != '\\' || s_[i_ + 1] != 'u') Fail("lone surrogate");
            i_ += 2;
            uint32_t lo = Hex4();
            if (lo < 0xdc00 || lo >= 0xe000) Fail("lone surrogate");
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          } else if (cp >= 0xdc00 && cp < 0xe000) {
            Fail("lone surrogate");
          }
          Utf8(&out, cp);
          break;
        }
        default: Fail("bad escape");
      }
    }
  }
  const std::string& s_;
  size_t i_ = 0;
};

// ------------------------------------------------------------------------------ the artifact check

// A failed check: the runner exits with code 3 (mnet-run's usage documents it).
struct VerifyError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline std::string ReadSmallFile(const std::string& path, size_t limit, const std::string& what) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw VerifyError("cannot read " + what + " " + path);
  std::string data(limit + 1, '\0');
  size_t n = std::fread(&data[0], 1, data.size(), f.get());
  if (std::ferror(f.get())) throw VerifyError("cannot read " + what + " " + path);
  if (n > limit) throw VerifyError(path + " is too large for " + what);
  data.resize(n);
  return data;
}

inline std::string RealPath(const std::string& path) {
  char* resolved = ::realpath(path.c_str(), nullptr);
  if (!resolved) return std::string();
  std::string s(resolved);
  std::free(resolved);
  return s;
}

// `path` must be a regular file inside `folder` (no link leading out of it).
inline void CheckInside(const std::string& folder, const std::string& path, const std::string& what) {
  std::string real_folder = RealPath(folder), real = RealPath(path);
  if (real.empty()) throw VerifyError(what + " missing: " + path);
  if (real_folder.empty() || real.compare(0, real_folder.size() + 1, real_folder + "/") != 0)
    throw VerifyError(what + " " + path + " is a link that leaves the artifact folder");
  struct stat st;
  if (::stat(real.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) throw VerifyError(what + " " + path + " is not a regular file");
}

inline const char* ThisArch() {
#if defined(__aarch64__)
  return "aarch64";
#elif defined(__x86_64__)
  return "x86_64";
#elif defined(__arm__)
  return "armv7l";
#else
  return "unknown";
#endif
}

inline std::string NormalizeArch(std::string arch) {
  for (auto& c : arch) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (arch == "arm64") return "aarch64";
  if (arch == "amd64") return "x86_64";
  if (arch == "armv7" || arch == "armv8l") return "armv7l";
  return arch;
}

struct Verified {
  std::vector<int64_t> input_shape;  // from the manifest
  std::string input_dtype;
  std::string sha256;
  std::string key_fingerprint;  // empty: no signature checked
};

// The checks of the Python loader (runtime.load), before the library is ever opened: the manifest beside
// `model` (signed by the key in `public_key_path`, if given), `model` listed in it under its file name,
// the artifact's CPU architecture, then the library's size and sha256. Throws VerifyError.
inline Verified VerifyArtifact(const std::string& model, const std::string& public_key_path) {
  size_t slash = model.rfind('/');
  std::string folder = slash == std::string::npos ? "." : model.substr(0, slash == 0 ? 1 : slash);
  std::string name = slash == std::string::npos ? model : model.substr(slash + 1);
  std::string manifest_path = folder + "/manifest.json";
  struct stat st;
  if (::lstat(manifest_path.c_str(), &st) != 0)
    throw VerifyError("no manifest.json beside " + model + ", so it cannot be checked (--no-verify runs it unchecked)");
  CheckInside(folder, manifest_path, "manifest");
  std::string manifest_bytes = ReadSmallFile(manifest_path, 1 << 20, "a manifest");
  Verified out;
  if (!public_key_path.empty()) {
    uint8_t key[32], sig[64];
    if (!ParsePublicKey(ReadSmallFile(public_key_path, 4096, "public key"), key))
      throw VerifyError(public_key_path + " is not an Ed25519 public key (PEM PUBLIC KEY or 64 hex digits)");
    std::string sig_path = folder + "/manifest.sig";
    if (::lstat(sig_path.c_str(), &st) != 0)
      throw VerifyError("artifact " + folder + " is not signed (manifest.sig is missing) and a public key was given");
    CheckInside(folder, sig_path, "signature");
    if (!FromHex(Trim(ReadSmallFile(sig_path, 1024, "a signature")), sig, 64))
      throw VerifyError(sig_path + " is not an Ed25519 signature (128 hex digits)");
    if (!Ed25519Verify(key, reinterpret_cast<const uint8_t*>(manifest_bytes.data()), manifest_bytes.size(), sig))
      throw VerifyError("signature check failed: manifest.json of " + folder + " was not signed by this key, or was changed");
    Sha256 fp;
    fp.Update(key, 32);
    out.key_fingerprint = Hex(fp.Final().data(), 8);
  }
  Json manifest;
  try {
    manifest = JsonReader(manifest_bytes).Parse();
  } catch (const std::runtime_error& e) {
    throw VerifyError(manifest_path + ": " + e.what());
  }
  const Json* version = manifest.Get("format_version");
  if (!version || version->kind != Json::kNumber || !version->integral || version->number != 1)
    throw VerifyError(manifest_path + ": unsupported format (expected format_version 1)");
  const Json* files = manifest.Get("files");
  if (!files || files->kind != Json::kObject) throw VerifyError(manifest_path + ": files must be an object");
  const Json* entry = files->Get(name);
  if (!entry) throw VerifyError(manifest_path + " does not list " + name);
  const Json* sha = entry->Get("sha256");
  uint8_t digest[32];
  if (!sha || sha->kind != Json::kString || !FromHex(sha->text, digest, 32) || Hex(digest, 32) != sha->text)
    throw VerifyError(manifest_path + ": files." + name + ".sha256 must be 64 lowercase hex digits");
  const Json* target = manifest.Get("target");
  const Json* arch = target ? target->Get("arch") : nullptr;
  if (!arch || arch->kind != Json::kString) throw VerifyError(manifest_path + ": target.arch is missing");
  if (NormalizeArch(arch->text) != ThisArch())
    throw VerifyError("artifact " + folder + " was built for " + NormalizeArch(arch->text) + ", this runner is " + ThisArch());
  const Json* input = manifest.Get("input");
  const Json* shape = input ? input->Get("shape") : nullptr;
  const Json* dtype = input ? input->Get("dtype") : nullptr;
  if (!shape || shape->kind != Json::kArray || shape->items.empty() || shape->items.size() > 8 || !dtype ||
      dtype->kind != Json::kString)
    throw VerifyError(manifest_path + ": input.shape and input.dtype are missing or malformed");
  for (const Json& d : shape->items) {
    if (d.kind != Json::kNumber || !d.integral || d.number < 1 || d.number > (1 << 24))
      throw VerifyError(manifest_path + ": input.shape must be a list of positive integers");
    out.input_shape.push_back(static_cast<int64_t>(d.number));
  }
  out.input_dtype = dtype->text;
  CheckInside(folder, model, "artifact file");
  if (::stat(model.c_str(), &st) != 0) throw VerifyError("artifact file missing: " + model);
  const Json* bytes = entry->Get("bytes");
  if (bytes && (bytes->kind != Json::kNumber || !bytes->integral || bytes->number != static_cast<double>(st.st_size)))
    throw VerifyError("artifact file altered (size " + std::to_string(st.st_size) + " is not the manifest's): " + model);
  std::string actual;
  try {
    actual = Sha256File(model);
  } catch (const std::runtime_error& e) {
    throw VerifyError(e.what());
  }
  if (actual != sha->text) throw VerifyError("artifact file altered (sha256 mismatch): " + model);
  out.sha256 = actual;
  return out;
}

}  // namespace mnet_trust
