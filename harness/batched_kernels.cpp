// The batched recurrence of harness/batched_kernels.py as two CPU ops: one layer of K members
// (weights stacked on a leading K dimension) forward over the whole sequence, and its
// backward through time.
//
// Forward: each member's layer input x_t and previous state h_{t-1} sit side by side in one
// buffer xh ([x_t | h_{t-1}] per row), so a time step is one bmm of all members' rows with
// their [W_ih | W_hh]^T (the GRU, whose n gate needs the two parts apart, projects x for
// all time steps up front and multiplies h_{t-1} by W_hh^T per step), into a small buffer
// that stays in cache, then one loop over the gates that does all of the cell's
// elementwise work (the ~10 forward ops of an autograd cell) and writes h_t into the next
// slot of xh. Backward: per time step one loop over the gates (the ~20 backward ops),
// writing the pre-activation gradients in place of the activated gates and summing the bias
// gradients, and one bmm for the gradient reaching h_{t-1}; then the weight gradients are one
// bmm over all time steps ([x | h_prev]^T x dgates), and the layer input's gradient another.
//
// Layouts (time-major inside a member: a time step of a member is one contiguous block):
//   x      [K, L*B, D]     the layer's input, time-major (any strides viewable as such)
//   w_ih   [K, G*H, D], w_hh [K, G*H, H]   torch's layout and gate order (i,f,g,o; r,z,n)
//   bias   [K, G*H]        b_ih + b_hh (RNN, LSTM) or b_ih (GRU)
//   b_hh   [K, G*H]        the GRU's b_hh (its n block sits inside r * (W_hn h + b_hn))
//   start  [K] int64       member k is held at its initial state (zeros) for t < start[k]
//   act    [K] int64       vanilla RNN activation per member: 0 tanh, 1 relu,
//                          2 leaky_relu (negative slope `slope`), 3 hardtanh
//   xh     [K, L+1, B, D+H]  slot t: [x_t | h_{t-1}] (h_{-1} = 0); h_{L-1} in slot L;
//                          the GRU's holds h only (D = 0)
//   gates  [K, L, B, G*H]  activated gates (LSTM i,f,g,o; GRU r,z,n; RNN unused until the
//                          backward), then the gradients of their pre-activations
//   cbuf   [K, L+1, B, H]  the LSTM's cell state: c_{t-1} in slot t
//   hn     [K, L, B, H]    the GRU's W_hn h_{t-1} + b_hn
//
// glibc's vector math (libmvec) is declared by <math.h> only under __FAST_MATH__: defining
// it here lets gcc vectorize exp and tanh (with -fopenmp-simd) without -ffast-math's other
// assumptions (finite values only, reassociation), so NaN and inf propagate as in torch.
#define __FAST_MATH__ 1
#include <cmath>

// Per-operator headers, not <ATen/ATen.h>: the first build takes seconds less.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

namespace {

constexpr int64_t RNN = 0, LSTM = 1, GRU = 2;
constexpr int64_t TANH = 0, RELU = 1, LEAKY_RELU = 2, HARDTANH = 3;

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// ---- forward, one member's row b at one time step -------------------------------------
// a: that row's x_t W_ih^T + h_{t-1} W_hh^T (no bias); bias: b_ih + b_hh (LSTM, RNN);
// g: the activated gates (written).

template <typename T>
void lstm_forward_row(int64_t H, const T* __restrict a, const T* __restrict bias,
                      const T* __restrict c_prev, T* __restrict c, T* __restrict h,
                      T* __restrict g) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T i = sigmoid(a[j] + bias[j]);
    T f = sigmoid(a[H + j] + bias[H + j]);
    T n = std::tanh(a[2 * H + j] + bias[2 * H + j]);
    T o = sigmoid(a[3 * H + j] + bias[3 * H + j]);
    T cj = f * c_prev[j] + i * n;
    c[j] = cj;
    h[j] = o * std::tanh(cj);
    g[j] = i;
    g[H + j] = f;
    g[2 * H + j] = n;
    g[3 * H + j] = o;
  }
}

// GRU: g holds x_t W_ih^T on entry (the input projection of all steps is one bmm up front:
// measured faster than a second bmm per step), the activated gates on exit;
// a = h_{t-1} W_hh^T (no biases); bias = b_ih.
template <typename T>
void gru_forward_row(int64_t H, T* __restrict g, const T* __restrict a,
                     const T* __restrict bias, const T* __restrict b_hh,
                     const T* __restrict h_prev, T* __restrict h, T* __restrict hn_out) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T r = sigmoid(g[j] + bias[j] + (a[j] + b_hh[j]));
    T z = sigmoid(g[H + j] + bias[H + j] + (a[H + j] + b_hh[H + j]));
    T hn = a[2 * H + j] + b_hh[2 * H + j];
    T n = std::tanh(g[2 * H + j] + bias[2 * H + j] + r * hn);
    h[j] = (h_prev[j] - n) * z + n;  // torch's GRU cell: (1 - z) n + z h
    g[j] = r;
    g[H + j] = z;
    g[2 * H + j] = n;
    hn_out[j] = hn;
  }
}

template <typename T>
void rnn_forward_row(int64_t H, int64_t act, T slope, const T* __restrict a,
                     const T* __restrict bias, T* __restrict h) {
  switch (act) {
    case TANH:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) h[j] = std::tanh(a[j] + bias[j]);
      break;
    case RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T p = a[j] + bias[j];
        h[j] = p < T(0) ? T(0) : p;  // NaN stays NaN, as torch.relu
      }
      break;
    case LEAKY_RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T p = a[j] + bias[j];
        h[j] = p > T(0) ? p : p * slope;
      }
      break;
    default:  // HARDTANH
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T p = a[j] + bias[j];
        h[j] = p <= T(-1) ? T(-1) : (p >= T(1) ? T(1) : p);
      }
  }
}

// ---- backward, one member's row b at one time step ------------------------------------
// dh = gout (from the outputs) + dh_rec (from step t+1). g: the activated gates on entry,
// the gradients of the gates' pre-activations on exit; db accumulates the bias gradient.

template <typename T, typename A>
void lstm_backward_row(int64_t H, const T* __restrict gout, const T* __restrict dh_rec,
                       T* __restrict dc, const T* __restrict c_prev, const T* __restrict c,
                       T* __restrict g, A* __restrict db) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T i = g[j], f = g[H + j], n = g[2 * H + j], o = g[3 * H + j];
    T tc = std::tanh(c[j]);
    T dh = gout[j] + dh_rec[j];
    T dcj = dc[j] + dh * o * (T(1) - tc * tc);
    T di = dcj * n * i * (T(1) - i);
    T df = dcj * c_prev[j] * f * (T(1) - f);
    T dn = dcj * i * (T(1) - n * n);
    T d_o = dh * tc * o * (T(1) - o);
    g[j] = di;
    g[H + j] = df;
    g[2 * H + j] = dn;
    g[3 * H + j] = d_o;
    db[j] += di;
    db[H + j] += df;
    db[2 * H + j] += dn;
    db[3 * H + j] += d_o;
    dc[j] = dcj * f;
  }
}

// GRU: g (r,z,n) -> the input-side gradients (dr, dz, dn); hn -> dn * r, the gradient of
// W_hn h + b_hn; dgh: this step's hidden-side gradients (dr, dz, dn * r) for the recurrent
// bmm; direct: dh * z, the gradient reaching h_{t-1} outside W_hh.
template <typename T, typename A>
void gru_backward_row(int64_t H, const T* __restrict gout, const T* __restrict dh_rec,
                      const T* __restrict h_prev, T* __restrict g, T* __restrict hn,
                      T* __restrict dgh, T* __restrict direct, A* __restrict db,
                      A* __restrict db_hh) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T r = g[j], z = g[H + j], n = g[2 * H + j];
    T dh = gout[j] + dh_rec[j];
    T dpn = dh * (T(1) - z) * (T(1) - n * n);
    T dpr = dpn * hn[j] * r * (T(1) - r);
    T dpz = dh * (h_prev[j] - n) * z * (T(1) - z);
    T dhn = dpn * r;
    g[j] = dpr;
    g[H + j] = dpz;
    g[2 * H + j] = dpn;
    hn[j] = dhn;
    dgh[j] = dpr;
    dgh[H + j] = dpz;
    dgh[2 * H + j] = dhn;
    direct[j] = dh * z;
    db[j] += dpr;
    db[H + j] += dpz;
    db[2 * H + j] += dpn;
    db_hh[j] += dpr;
    db_hh[H + j] += dpz;
    db_hh[2 * H + j] += dhn;
  }
}

template <typename T, typename A>
void rnn_backward_row(int64_t H, int64_t act, T slope, const T* __restrict gout,
                      const T* __restrict dh_rec, const T* __restrict h, T* __restrict g,
                      A* __restrict db) {
  switch (act) {
    case TANH:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) g[j] = (gout[j] + dh_rec[j]) * (T(1) - h[j] * h[j]);
      break;
    case RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) g[j] = h[j] > T(0) ? gout[j] + dh_rec[j] : T(0);
      break;
    case LEAKY_RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T dh = gout[j] + dh_rec[j];
        g[j] = h[j] > T(0) ? dh : dh * slope;
      }
      break;
    default:  // HARDTANH: the gradient passes where -1 < pre < 1, i.e. where -1 < h < 1
#pragma omp simd
      for (int64_t j = 0; j < H; ++j)
        g[j] = (h[j] > T(-1) && h[j] < T(1)) ? gout[j] + dh_rec[j] : T(0);
  }
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) db[j] += g[j];
}

int64_t gate_blocks(int64_t cell) { return cell == LSTM ? 4 : (cell == GRU ? 3 : 1); }

void check(int64_t cell, const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
           const at::Tensor& bias, const at::Tensor& start, const at::Tensor& act,
           int64_t length) {
  TORCH_CHECK(cell == RNN || cell == LSTM || cell == GRU, "batched_kernels: unknown cell ", cell);
  TORCH_CHECK(x.device().is_cpu() && w_ih.device().is_cpu() && w_hh.device().is_cpu(),
              "batched_kernels: CPU tensors only");
  const int64_t K = w_hh.size(0), GH = w_hh.size(1), H = w_hh.size(2);
  TORCH_CHECK(w_hh.dim() == 3 && GH == gate_blocks(cell) * H, "batched_kernels: w_hh [K,G*H,H]");
  TORCH_CHECK(x.dim() == 3 && x.size(0) == K && length > 0 && x.size(1) % length == 0 &&
                  x.stride(2) == 1,
              "batched_kernels: x [K, L*B, D] with unit last stride");
  TORCH_CHECK(w_ih.dim() == 3 && w_ih.size(0) == K && w_ih.size(1) == GH &&
                  w_ih.size(2) == x.size(2),
              "batched_kernels: w_ih [K,G*H,D]");
  TORCH_CHECK(bias.sizes() == at::IntArrayRef({K, GH}), "batched_kernels: bias [K,G*H]");
  TORCH_CHECK(start.scalar_type() == at::kLong && start.numel() == K &&
                  act.scalar_type() == at::kLong && act.numel() == K,
              "batched_kernels: start and act are int64 [K]");
}

// Returns {xh, gates, cbuf (LSTM; else empty), hn (GRU; else empty)}; h_t is
// xh[:, t+1, :, D:].
std::vector<at::Tensor> sequence_forward(int64_t cell, const at::Tensor& x,
                                         const at::Tensor& w_ih, const at::Tensor& w_hh,
                                         const at::Tensor& bias_, const at::Tensor& b_hh_,
                                         const at::Tensor& start_, const at::Tensor& act_,
                                         double slope, int64_t length) {
  check(cell, x, w_ih, w_hh, bias_, start_, act_, length);
  const int64_t K = w_hh.size(0), GH = w_hh.size(1), H = w_hh.size(2);
  // The GRU keeps no copy of x in xh (D = 0 there): it projects x up front.
  const int64_t L = length, B = x.size(1) / length, D = cell == GRU ? 0 : x.size(2);
  const int64_t DH = D + H;
  auto options = x.options();
  at::Tensor xh = at::empty({K, L + 1, B, DH}, options);
  if (D) {
    xh.narrow(1, 0, L).narrow(3, 0, D).copy_(x.reshape({K, L, B, D}));
    xh.select(1, L).narrow(2, 0, D).zero_();
  }
  xh.select(1, 0).narrow(2, D, H).zero_();
  at::Tensor gates = at::empty({K, L, B, GH}, options);
  at::Tensor cbuf = at::empty({cell == LSTM ? K : 0, L + 1, B, H}, options);
  if (cell == LSTM) cbuf.select(1, 0).zero_();
  at::Tensor hn = at::empty({cell == GRU ? K : 0, L, B, H}, options);
  at::Tensor acc = at::empty({K, B, GH}, options);
  // [K, D+H, G*H]: [W_ih | W_hh]^T, contiguous (the faster bmm operand); the GRU's W_hh^T.
  at::Tensor w_step = cell == GRU ? w_hh.transpose(1, 2).contiguous()
                                  : at::cat({w_ih, w_hh}, 2).transpose(1, 2).contiguous();
  if (cell == GRU) {  // the input projection of all time steps, into the gate buffer
    at::Tensor projected = gates.view({K, L * B, GH});
    at::bmm_out(projected, x, w_ih.transpose(1, 2));
  }
  at::Tensor bias = bias_.contiguous();
  at::Tensor b_hh = cell == GRU ? b_hh_.contiguous() : bias;
  at::Tensor start = start_.contiguous(), act = act_.contiguous();
  const int64_t* st = start.data_ptr<int64_t>();
  const int64_t* ac = act.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "batched_kernels_forward", [&] {
    scalar_t* gp = gates.data_ptr<scalar_t>();
    const scalar_t* ap = acc.data_ptr<scalar_t>();
    scalar_t* xhp = xh.data_ptr<scalar_t>();
    scalar_t* cp = cell == LSTM ? cbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* np = cell == GRU ? hn.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = bias.data_ptr<scalar_t>();
    const scalar_t* bhp = b_hh.data_ptr<scalar_t>();
    const scalar_t sl = static_cast<scalar_t>(slope);
    for (int64_t t = 0; t < L; ++t) {
      at::Tensor step = xh.select(1, t);  // [K, B, D+H]: [x_t | h_{t-1}]
      at::bmm_out(acc, step, w_step);
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = (k * L + t) * B + b;
          const int64_t state = (k * (L + 1) + t) * B + b;  // slot t: h_{t-1}, c_{t-1}
          scalar_t* h_prev = xhp + state * DH + D;
          scalar_t* h_next = h_prev + B * DH;
          if (t < st[k]) {  // held at the initial state
            std::fill(h_next, h_next + H, scalar_t(0));
            if (cell == LSTM) std::fill(cp + (state + B) * H, cp + (state + B + 1) * H, 0);
            continue;
          }
          const scalar_t* a = ap + (k * B + b) * GH;
          if (cell == LSTM) {
            lstm_forward_row(H, a, bp + k * GH, cp + state * H, cp + (state + B) * H, h_next,
                             gp + row * GH);
          } else if (cell == GRU) {
            gru_forward_row(H, gp + row * GH, a, bp + k * GH, bhp + k * GH, h_prev, h_next,
                            np + row * H);
          } else {
            rnn_forward_row(H, ac[k], sl, a, bp + k * GH, h_next);
          }
        }
      }
    }
  });
  return {xh, gates, cbuf, hn};
}

// Consumes `gates` and `hn` (overwritten with gradients: call once per forward).
// Returns {d x (if need_dx; else empty), d w_ih, d w_hh, d bias, d b_hh (GRU; else empty)}.
std::vector<at::Tensor> sequence_backward(int64_t cell, const at::Tensor& grad_h_,
                                          const at::Tensor& x, const at::Tensor& w_ih,
                                          const at::Tensor& w_hh,
                                          const at::Tensor& xh, const at::Tensor& gates,
                                          const at::Tensor& cbuf, const at::Tensor& hn,
                                          const at::Tensor& start_, const at::Tensor& act_,
                                          double slope, bool need_dx) {
  const int64_t K = xh.size(0), L = xh.size(1) - 1, B = xh.size(2), DH = xh.size(3);
  const int64_t GH = w_hh.size(1), H = w_hh.size(2), D = DH - H;  // D = 0: the GRU
  at::Tensor grad_h = grad_h_.contiguous();
  TORCH_CHECK(grad_h.sizes() == at::IntArrayRef({K, L, B, H}), "batched_kernels: grad_h [K,L,B,H]");
  auto options = xh.options();
  auto acc_options = options.dtype(at::kDouble);  // the bias gradients sum L*B rows
  at::Tensor dh_rec = at::zeros({K, B, H}, options);
  at::Tensor dc = at::zeros({cell == LSTM ? K : 0, B, H}, options);
  at::Tensor direct = at::zeros({cell == GRU ? K : 0, B, H}, options);
  at::Tensor dgh = at::empty({cell == GRU ? K : 0, B, GH}, options);
  at::Tensor db = at::zeros({K, GH}, acc_options);
  at::Tensor db_hh = at::zeros({cell == GRU ? K : 0, GH}, acc_options);
  at::Tensor start = start_.contiguous(), act = act_.contiguous();
  const int64_t* st = start.data_ptr<int64_t>();
  const int64_t* ac = act.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(xh.scalar_type(), "batched_kernels_backward", [&] {
    using acc_t = double;
    const scalar_t* gop = grad_h.data_ptr<scalar_t>();
    const scalar_t* xhp = xh.data_ptr<scalar_t>();
    const scalar_t* cp = cell == LSTM ? cbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* gp = gates.data_ptr<scalar_t>();
    scalar_t* np = cell == GRU ? hn.data_ptr<scalar_t>() : nullptr;
    const scalar_t* drp = dh_rec.data_ptr<scalar_t>();
    scalar_t* dcp = cell == LSTM ? dc.data_ptr<scalar_t>() : nullptr;
    scalar_t* dgp = cell == GRU ? dgh.data_ptr<scalar_t>() : nullptr;
    scalar_t* dip = cell == GRU ? direct.data_ptr<scalar_t>() : nullptr;
    acc_t* dbp = db.data_ptr<acc_t>();
    acc_t* dbhp = cell == GRU ? db_hh.data_ptr<acc_t>() : nullptr;
    const scalar_t sl = static_cast<scalar_t>(slope);
    for (int64_t t = L - 1; t >= 0; --t) {
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = (k * L + t) * B + b;
          const int64_t state = (k * (L + 1) + t) * B + b;  // slot t: h_{t-1}, c_{t-1}
          const int64_t member_row = (k * B + b) * H;
          scalar_t* g = gp + row * GH;
          if (t < st[k]) {  // held: no dependence on the weights
            std::fill(g, g + GH, scalar_t(0));
            if (cell == GRU) {
              std::fill(np + row * H, np + (row + 1) * H, scalar_t(0));
              std::fill(dgp + (k * B + b) * GH, dgp + (k * B + b + 1) * GH, scalar_t(0));
              std::fill(dip + member_row, dip + member_row + H, scalar_t(0));
            }
            continue;
          }
          const scalar_t* go = gop + row * H;
          const scalar_t* dr = drp + member_row;
          const scalar_t* h_prev = xhp + state * DH + D;
          if (cell == LSTM) {
            lstm_backward_row(H, go, dr, dcp + member_row, cp + state * H,
                              cp + (state + B) * H, g, dbp + k * GH);
          } else if (cell == GRU) {
            gru_backward_row(H, go, dr, h_prev, g, np + row * H, dgp + (k * B + b) * GH,
                             dip + member_row, dbp + k * GH, dbhp + k * GH);
          } else {
            rnn_backward_row(H, ac[k], sl, go, dr, h_prev + B * DH, g, dbp + k * GH);
          }
        }
      }
      if (t > 0) {  // the gradient reaching h_{t-1} through W_hh (and the GRU's z h term)
        if (cell == GRU) {
          at::baddbmm_out(dh_rec, direct, dgh, w_hh);
        } else {
          at::bmm_out(dh_rec, gates.select(1, t), w_hh);
        }
      }
    }
  });
  // Over all time steps at once: [x | h_prev]^T x dgates, then transposed (the faster bmm
  // shape than dgates^T x [x | h_prev]).
  at::Tensor grads = gates.view({K, L * B, GH});
  at::Tensor inputs = xh.narrow(1, 0, L).reshape({K, L * B, DH}).transpose(1, 2);
  at::Tensor dw_ih, dw_hh;
  if (cell == GRU) {  // the hidden side's n block is dn * r (kept in hn)
    at::Tensor h_prev = inputs;
    dw_ih = at::bmm(x.transpose(1, 2), grads);
    dw_hh = at::cat({at::bmm(h_prev, grads.narrow(2, 0, 2 * H)),
                     at::bmm(h_prev, hn.view({K, L * B, H}))}, 2);
  } else {
    at::Tensor dw = at::bmm(inputs, grads);  // [K, D+H, G*H]
    dw_ih = dw.narrow(1, 0, D);
    dw_hh = dw.narrow(1, D, H);
  }
  dw_ih = dw_ih.transpose(1, 2).contiguous();
  dw_hh = dw_hh.transpose(1, 2).contiguous();
  at::Tensor dx = need_dx ? at::bmm(grads, w_ih) : at::empty({0}, options);
  return {dx, dw_ih, dw_hh, db.to(options.dtype()),
          cell == GRU ? db_hh.to(options.dtype()) : at::empty({0}, options)};
}

}  // namespace

TORCH_LIBRARY(batched_kernels, m) {
  m.def("sequence_forward", &sequence_forward);
  m.def("sequence_backward", &sequence_backward);
}
