// The counter-based generator of random init (METHODS.md, "Models and
// initialisation"): every value is a pure function of (seed, parameter name,
// element index), so a preset's weights are the same on the CPU and on every
// GPU, made where they live, in any order and by any number of threads.
//
//   key      = Mix(seed, FNV-1a-64(name))           (64 bits, two words)
//   block g  = Philox-4x32-10(counter = (g lo, g hi, 0, 0), key)
//   element i of the parameter takes word i % 4 of block g = i / 4.
//
// Philox-4x32-10 is Salmon et al., "Parallel random numbers: as easy as 1, 2,
// 3" (SC 2011), written here from the paper; tests check it against the
// published known-answer vectors and LibTorch's own Philox.
//
// Transforms, in double, then rounded once to float32 (and from float32 to
// the parameter's dtype, round to nearest even):
//   u         = (word + 0.5) 2^-32, in (0, 1), never 0 or 1
//   uniform   lo + (hi - lo) u
//   normal    Box-Muller on the block's word pairs (0, 1) and (2, 3):
//             r = sqrt(-2 ln u_a), z_a = r cos(2 pi u_b), z_b = r sin(2 pi u_b);
//             |z| <= sqrt(-2 ln 2^-33) = 6.76 (tail mass beyond: 1.4e-11).
// ln, cos and sin are written here with +, -, *, / and sqrt only (no libm,
// no CUDA intrinsics): IEEE-754 rounds each of those exactly, so the host
// and the device compute the same bits, PROVIDED neither compiler fuses a
// multiply and an add — g++ with -ffp-contract=off, nvcc with -fmad=false
// (set on every translation unit that includes this header, CMake). With
// that, CPU and CUDA agree bit for bit; their accuracy (< 1e-15 relative
// before the float rounding) is tested against std::log / std::cos.
//
// Plain C++ and CUDA: compiles with g++ without any CUDA header, with nvcc,
// and under the CPU emulation of CUDA (worker/kernels/cuda_emulation.h).
#ifndef LAYERFLOW_WORKER_MODEL_COUNTER_RNG_H_
#define LAYERFLOW_WORKER_MODEL_COUNTER_RNG_H_

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__) || defined(LF_CUDA_EMULATION)
#define LF_COUNTER_FN __host__ __device__ inline
#else
#define LF_COUNTER_FN inline
#endif

namespace layerflow::worker::counter_rng {

struct Block {
  uint32_t w[4];
};

LF_COUNTER_FN void MulHiLo(uint32_t a, uint32_t b, uint32_t* hi, uint32_t* lo) {
  const uint64_t product = static_cast<uint64_t>(a) * b;
  *hi = static_cast<uint32_t>(product >> 32);
  *lo = static_cast<uint32_t>(product);
}

// Philox-4x32 with 10 rounds: the round is the paper's S-box (two 32 x 32 ->
// 64 multiplies, the halves crossed and xored with the key), the key bumped
// by the Weyl constants between rounds.
LF_COUNTER_FN Block Philox4x32_10(Block ctr, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;  // golden ratio
      k1 += 0xBB67AE85u;  // sqrt(3) - 1
    }
    uint32_t hi0, lo0, hi1, lo1;
    MulHiLo(0xD2511F53u, ctr.w[0], &hi0, &lo0);
    MulHiLo(0xCD9E8D57u, ctr.w[2], &hi1, &lo1);
    ctr = Block{{hi1 ^ ctr.w[1] ^ k0, lo1, hi0 ^ ctr.w[3] ^ k1, lo0}};
  }
  return ctr;
}

// FNV-1a, 64 bits, over the name's bytes: stable across compilers, builds
// and runs (std::hash is none of these).
inline uint64_t NameHash(const char* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < size; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 0x100000001b3ull;
  }
  return h;
}

// SplitMix64's finaliser (Steele et al. 2014): a bijection of 64 bits whose
// every output bit depends on every input bit.
LF_COUNTER_FN uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// The parameter's Philox key. FNV-1a alone leaves names that differ in
// their last byte with keys that differ in few bits; the two SplitMix64
// rounds spread every bit of the name and of the seed over the key.
inline uint64_t ParameterKey(uint64_t seed, uint64_t name_hash) {
  return SplitMix64(SplitMix64(name_hash) ^ SplitMix64(seed ^ 0x6C61796572666C6Full));
}

LF_COUNTER_FN Block BlockAt(uint64_t key, uint64_t block) {
  return Philox4x32_10(
      Block{{static_cast<uint32_t>(block), static_cast<uint32_t>(block >> 32), 0u, 0u}},
      static_cast<uint32_t>(key), static_cast<uint32_t>(key >> 32));
}

// (word + 0.5) 2^-32: exact in double, in (0, 1).
LF_COUNTER_FN double Uniform01(uint32_t word) {
  return (static_cast<double>(word) + 0.5) * (1.0 / 4294967296.0);
}

// IEEE-754 square root, correctly rounded on both sides.
LF_COUNTER_FN double Sqrt(double x) {
#ifdef __CUDA_ARCH__
  return sqrt(x);
#else
  return std::sqrt(x);
#endif
}

LF_COUNTER_FN uint64_t DoubleBits(double x) {
  uint64_t bits;
  memcpy(&bits, &x, sizeof bits);
  return bits;
}
LF_COUNTER_FN double BitsDouble(uint64_t bits) {
  double x;
  memcpy(&x, &bits, sizeof x);
  return x;
}

// ln x for a normal, positive, finite x (every u above): x = m 2^e with m
// in [sqrt(1/2), sqrt(2)) from the bits, ln m = 2 atanh(s), s = (m-1)/(m+1),
// |s| <= 0.1716, by its series to s^23 (next term < 3e-19 relative).
LF_COUNTER_FN double Log(double x) {
  const uint64_t bits = DoubleBits(x);
  int e = static_cast<int>((bits >> 52) & 0x7ff) - 1023;
  double m = BitsDouble((bits & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull);  // [1, 2)
  if (m > 1.4142135623730951) {
    m = m * 0.5;
    e += 1;
  }
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  double p = 1.0 / 23.0;
  p = p * s2 + 1.0 / 21.0;
  p = p * s2 + 1.0 / 19.0;
  p = p * s2 + 1.0 / 17.0;
  p = p * s2 + 1.0 / 15.0;
  p = p * s2 + 1.0 / 13.0;
  p = p * s2 + 1.0 / 11.0;
  p = p * s2 + 1.0 / 9.0;
  p = p * s2 + 1.0 / 7.0;
  p = p * s2 + 1.0 / 5.0;
  p = p * s2 + 1.0 / 3.0;
  p = p * s2 + 1.0;
  // ln 2 in two parts: e * kLn2Hi is exact for |e| < 2^11.
  constexpr double kLn2Hi = 6.93147180369123816490e-01;
  constexpr double kLn2Lo = 1.90821492927058770002e-10;
  const double de = static_cast<double>(e);
  return de * kLn2Hi + (2.0 * s * p + de * kLn2Lo);
}

// sin and cos of x in [0, pi/4] by their Taylor series to x^19 / x^18
// (next terms < 2e-18).
LF_COUNTER_FN void SinCosReduced(double x, double* sin_x, double* cos_x) {
  const double x2 = x * x;
  double s = -1.0 / 121645100408832000.0;  // -1/19!
  s = s * x2 + 1.0 / 355687428096000.0;    // 1/17!
  s = s * x2 - 1.0 / 1307674368000.0;      // 1/15!
  s = s * x2 + 1.0 / 6227020800.0;         // 1/13!
  s = s * x2 - 1.0 / 39916800.0;           // 1/11!
  s = s * x2 + 1.0 / 362880.0;             // 1/9!
  s = s * x2 - 1.0 / 5040.0;               // 1/7!
  s = s * x2 + 1.0 / 120.0;                // 1/5!
  s = s * x2 - 1.0 / 6.0;                  // 1/3!
  *sin_x = x + x * (x2 * s);
  double c = 1.0 / 6402373705728000.0;  // 1/18!
  c = c * x2 - 1.0 / 20922789888000.0;  // 1/16!
  c = c * x2 + 1.0 / 87178291200.0;     // 1/14!
  c = c * x2 - 1.0 / 479001600.0;       // 1/12!
  c = c * x2 + 1.0 / 3628800.0;         // 1/10!
  c = c * x2 - 1.0 / 40320.0;           // 1/8!
  c = c * x2 + 1.0 / 720.0;             // 1/6!
  c = c * x2 - 1.0 / 24.0;              // 1/4!
  c = c * x2 + 0.5;                     // 1/2!
  *cos_x = 1.0 - x2 * c;
}

// sin and cos of 2 pi u for u in (0, 1) from Uniform01. The reduction is
// exact: 4u, its integer part q (the quadrant) and f = 4u - q in [0, 1) are
// exact in double (u has 33 significant bits), and so is 1 - f, so only
// the final angle (pi/2) f' with f' <= 1/2 is rounded.
LF_COUNTER_FN void SinCos2Pi(double u, double* sin_x, double* cos_x) {
  const double t = 4.0 * u;
  const int q = static_cast<int>(t);
  double f = t - static_cast<double>(q);
  const bool mirror = f > 0.5;  // sin(pi/2 f) = cos(pi/2 (1 - f))
  if (mirror) f = 1.0 - f;
  double s, c;
  SinCosReduced(f * 1.57079632679489661923, &s, &c);
  if (mirror) {
    const double swap = s;
    s = c;
    c = swap;
  }
  // Quadrant q adds q pi/2: (s, c) -> (c, -s) per quadrant.
  switch (q & 3) {
    case 0:
      *sin_x = s;
      *cos_x = c;
      break;
    case 1:
      *sin_x = c;
      *cos_x = -s;
      break;
    case 2:
      *sin_x = -s;
      *cos_x = -c;
      break;
    default:
      *sin_x = -c;
      *cos_x = s;
      break;
  }
}

// What a fill draws: uniform in [a, b] (b only by float rounding), or normal with mean 0, std a.
enum class Distribution : int32_t { kUniform = 0, kNormal = 1 };

struct FillSpec {
  uint64_t key = 0;  // ParameterKey(seed, NameHash(name))
  Distribution distribution = Distribution::kNormal;
  double a = 0;  // uniform: low; normal: std
  double b = 0;  // uniform: high
};

// Elements 4g .. 4g + 3 of the parameter, as float32.
LF_COUNTER_FN void Values4(const FillSpec& spec, uint64_t g, float out[4]) {
  const Block blk = BlockAt(spec.key, g);
  if (spec.distribution == Distribution::kUniform) {
    const double width = spec.b - spec.a;
    for (int j = 0; j < 4; ++j) {
      out[j] = static_cast<float>(spec.a + width * Uniform01(blk.w[j]));
    }
    return;
  }
  for (int j = 0; j < 4; j += 2) {
    const double r = Sqrt(-2.0 * Log(Uniform01(blk.w[j])));
    double s, c;
    SinCos2Pi(Uniform01(blk.w[j + 1]), &s, &c);
    out[j] = static_cast<float>(spec.a * (r * c));
    out[j + 1] = static_cast<float>(spec.a * (r * s));
  }
}

// Element i alone (tests; fills use Values4 per block).
LF_COUNTER_FN float ValueAt(const FillSpec& spec, uint64_t i) {
  float v[4];
  Values4(spec, i / 4, v);
  return v[i % 4];
}

}  // namespace layerflow::worker::counter_rng

#endif  // LAYERFLOW_WORKER_MODEL_COUNTER_RNG_H_
