#include "tests/worker/testing/naive_reference.h"

#include <cmath>
#include <stdexcept>

namespace layerflow::worker::testing {
namespace {

const std::vector<double>& W(const NaiveGptNeoX& m, const std::string& name) {
  auto it = m.weights.find(name);
  if (it == m.weights.end()) throw std::runtime_error("missing " + name);
  return it->second;
}

// y[t][o] = sum_i x[t][i] w[o][i] + b[o]   (nn.Linear, w is [out, in])
std::vector<double> Linear(const std::vector<double>& x, int64_t n, int64_t in,
                           const std::vector<double>& w, const std::vector<double>* b,
                           int64_t out) {
  std::vector<double> y(n * out);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t o = 0; o < out; ++o) {
      double acc = b != nullptr ? (*b)[o] : 0.0;
      for (int64_t i = 0; i < in; ++i) acc += x[t * in + i] * w[o * in + i];
      y[t * out + o] = acc;
    }
  }
  return y;
}

std::vector<double> LayerNorm(const std::vector<double>& x, int64_t n, int64_t d,
                              const std::vector<double>& w, const std::vector<double>& b,
                              double eps) {
  std::vector<double> y(n * d);
  for (int64_t t = 0; t < n; ++t) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < d; ++i) mean += x[t * d + i];
    mean /= d;
    for (int64_t i = 0; i < d; ++i) {
      var += (x[t * d + i] - mean) * (x[t * d + i] - mean);
    }
    var /= d;  // biased, as nn.LayerNorm
    const double inv = 1.0 / std::sqrt(var + eps);
    for (int64_t i = 0; i < d; ++i) {
      y[t * d + i] = (x[t * d + i] - mean) * inv * w[i] + b[i];
    }
  }
  return y;
}

std::vector<double> Attention(const NaiveGptNeoX& m, const std::string& p,
                              const std::vector<double>& x, int64_t n) {
  const GptNeoXConfig& c = m.config;
  const int64_t d = c.hidden_size, heads = c.num_attention_heads;
  const int64_t hs = d / heads;
  const int64_t rot = static_cast<int64_t>(hs * c.rotary_pct);
  const bool bias = c.attention_bias;
  std::vector<double> qkv =
      Linear(x, n, d, W(m, p + "attention.query_key_value.weight"),
             bias ? &W(m, p + "attention.query_key_value.bias") : nullptr, 3 * d);
  std::vector<double> merged(n * d);
  for (int64_t h = 0; h < heads; ++h) {
    // Per head the fused output holds [q | k | v], each head_size wide.
    auto q_at = [&](int64_t t) { return &qkv[t * 3 * d + h * 3 * hs]; };
    std::vector<double> q(n * hs), k(n * hs), v(n * hs);
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t i = 0; i < hs; ++i) {
        q[t * hs + i] = q_at(t)[i];
        k[t * hs + i] = q_at(t)[hs + i];
        v[t * hs + i] = q_at(t)[2 * hs + i];
      }
      // Rotary on the first `rot` dims, rotate_half pairing (i, i + rot/2).
      for (int64_t i = 0; i < rot / 2; ++i) {
        const double inv_freq = 1.0 / std::pow(c.rotary_emb_base, static_cast<double>(2 * i) / rot);
        const double angle = static_cast<double>(t) * inv_freq;
        const double cs = std::cos(angle), sn = std::sin(angle);
        for (std::vector<double>* z : {&q, &k}) {
          const double a = (*z)[t * hs + i], b = (*z)[t * hs + i + rot / 2];
          (*z)[t * hs + i] = a * cs - b * sn;
          (*z)[t * hs + i + rot / 2] = b * cs + a * sn;
        }
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      std::vector<double> score(t + 1);
      double top = -INFINITY;
      for (int64_t j = 0; j <= t; ++j) {  // causal
        double dot = 0;
        for (int64_t i = 0; i < hs; ++i) dot += q[t * hs + i] * k[j * hs + i];
        score[j] = dot / std::sqrt(static_cast<double>(hs));
        top = std::max(top, score[j]);
      }
      double total = 0;
      for (double& s : score) total += (s = std::exp(s - top));
      for (int64_t i = 0; i < hs; ++i) {
        double acc = 0;
        for (int64_t j = 0; j <= t; ++j) acc += score[j] * v[j * hs + i];
        merged[t * d + h * hs + i] = acc / total;
      }
    }
  }
  return Linear(merged, n, d, W(m, p + "attention.dense.weight"),
                bias ? &W(m, p + "attention.dense.bias") : nullptr, d);
}

std::vector<double> Mlp(const NaiveGptNeoX& m, const std::string& p, const std::vector<double>& x,
                        int64_t n) {
  const int64_t d = m.config.hidden_size, ff = m.config.intermediate_size;
  std::vector<double> h = Linear(x, n, d, W(m, p + "mlp.dense_h_to_4h.weight"),
                                 &W(m, p + "mlp.dense_h_to_4h.bias"), ff);
  for (double& z : h) z = 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
  return Linear(h, n, ff, W(m, p + "mlp.dense_4h_to_h.weight"), &W(m, p + "mlp.dense_4h_to_h.bias"),
                d);
}

}  // namespace

std::vector<NaiveStates> NaiveForward(const NaiveGptNeoX& m, const std::vector<int32_t>& ids) {
  const GptNeoXConfig& c = m.config;
  const int64_t n = static_cast<int64_t>(ids.size()), d = c.hidden_size;
  std::vector<NaiveStates> points;
  const std::vector<double>& embed = W(m, "gpt_neox.embed_in.weight");
  std::vector<double> x(n * d);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < d; ++i) x[t * d + i] = embed[ids[t] * d + i];
  }
  points.push_back(x);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "gpt_neox.layers." + std::to_string(l) + ".";
    const std::vector<double> ln1 = LayerNorm(x, n, d, W(m, p + "input_layernorm.weight"),
                                              W(m, p + "input_layernorm.bias"), c.layer_norm_eps);
    const std::vector<double> attn = Attention(m, p, ln1, n);
    if (c.use_parallel_residual) {
      const std::vector<double> mlp =
          Mlp(m, p,
              LayerNorm(x, n, d, W(m, p + "post_attention_layernorm.weight"),
                        W(m, p + "post_attention_layernorm.bias"), c.layer_norm_eps),
              n);
      for (int64_t i = 0; i < n * d; ++i) x[i] = x[i] + attn[i] + mlp[i];
    } else {
      for (int64_t i = 0; i < n * d; ++i) x[i] += attn[i];
      const std::vector<double> mlp =
          Mlp(m, p,
              LayerNorm(x, n, d, W(m, p + "post_attention_layernorm.weight"),
                        W(m, p + "post_attention_layernorm.bias"), c.layer_norm_eps),
              n);
      for (int64_t i = 0; i < n * d; ++i) x[i] += mlp[i];
    }
    points.push_back(x);
  }
  points.push_back(LayerNorm(x, n, d, W(m, "gpt_neox.final_layer_norm.weight"),
                             W(m, "gpt_neox.final_layer_norm.bias"), c.layer_norm_eps));
  return points;
}

namespace {
double Cos(const double* a, const double* b, int64_t d) {
  double ab = 0, aa = 0, bb = 0;
  for (int64_t i = 0; i < d; ++i) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  return ab / std::sqrt(aa * bb);
}
}  // namespace

double NaiveAdjacentCos(const NaiveStates& a, const NaiveStates& b, int64_t n, int64_t d) {
  double total = 0;
  for (int64_t t = 0; t < n; ++t) total += Cos(&a[t * d], &b[t * d], d);
  return total / n;
}

double NaiveIntertokenCos(const NaiveStates& h, int64_t n, int64_t d) {
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = i + 1; j < n; ++j) total += Cos(&h[i * d], &h[j * d], d);
  }
  return total / (static_cast<double>(n) * (n - 1) / 2);
}

}  // namespace layerflow::worker::testing
