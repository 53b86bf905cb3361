// The batched recurrence of harness/batched_cells.py as two CPU ops: a whole sequence of one
// layer forward, and its backward through time, for K members with stacked weights.
//
// Per time step: one bmm of all members' previous states with their W_hh (at::bmm_out into
// a reused buffer), then one pass over the gates that does all of the cell's elementwise
// work (the ~10 forward and ~20 backward ops of the autograd cell) in one loop. The weight
// gradient dW_hh is one bmm at the end over all time steps ([K, G*H, L*B] x [K, L*B, H]).
//
// Layouts (time-major inside a member, so a time step of a member is one contiguous block):
//   xproj  [K, L, B, G*H]  input projection + bias (b_ih + b_hh; the GRU's b_ih only)
//   w_hh   [K, G*H, H]     torch's layout and gate order (LSTM i,f,g,o; GRU r,z,n)
//   b_hh   [K, G*H]        used by the GRU only (its n block sits inside r * (...))
//   start  [K] int64       member k is held at its initial state (zeros) for t < start[k]
//   act    [K] int64       vanilla RNN activation per member: 0 tanh, 1 relu,
//                          2 leaky_relu (negative slope `slope`), 3 hardtanh
//   hbuf   [K, L+1, B, H]  h_{-1} = 0 in slot 0, h_t in slot t+1
//   cbuf   [K, L+1, B, H]  the LSTM's cell state, laid out as hbuf
//   saved  [K, L, B, S]    what the backward needs: LSTM i,f,g,o,tanh(c) (S = 5H);
//                          GRU r,z,n, W_hn h + b_hn (S = 4H); none for the RNN
//
// glibc's vector math (libmvec) is declared by <math.h> only under __FAST_MATH__: defining
// it here lets gcc vectorize exp and tanh (with -fopenmp-simd) without -ffast-math's other
// assumptions (finite values only, reassociation), so NaN and inf propagate as in torch.
#define __FAST_MATH__ 1
#include <cmath>

#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

namespace {

constexpr int64_t RNN = 0, LSTM = 1, GRU = 2;
constexpr int64_t TANH = 0, RELU = 1, LEAKY_RELU = 2, HARDTANH = 3;

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// ---- forward, one member's row b at one time step -------------------------------------

template <typename T>
void lstm_forward_row(int64_t H, const T* __restrict x, const T* __restrict a,
                      const T* __restrict c_prev, T* __restrict c, T* __restrict h,
                      T* __restrict s) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T i = sigmoid(x[j] + a[j]);
    T f = sigmoid(x[H + j] + a[H + j]);
    T g = std::tanh(x[2 * H + j] + a[2 * H + j]);
    T o = sigmoid(x[3 * H + j] + a[3 * H + j]);
    T cj = f * c_prev[j] + i * g;
    T tc = std::tanh(cj);
    c[j] = cj;
    h[j] = o * tc;
    s[j] = i;
    s[H + j] = f;
    s[2 * H + j] = g;
    s[3 * H + j] = o;
    s[4 * H + j] = tc;
  }
}

template <typename T>
void gru_forward_row(int64_t H, const T* __restrict x, const T* __restrict a,
                     const T* __restrict bias, const T* __restrict h_prev, T* __restrict h,
                     T* __restrict s) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T r = sigmoid(x[j] + a[j] + bias[j]);
    T z = sigmoid(x[H + j] + a[H + j] + bias[H + j]);
    T hn = a[2 * H + j] + bias[2 * H + j];
    T n = std::tanh(x[2 * H + j] + r * hn);
    h[j] = (h_prev[j] - n) * z + n;  // torch's GRU cell: (1 - z) n + z h
    s[j] = r;
    s[H + j] = z;
    s[2 * H + j] = n;
    s[3 * H + j] = hn;
  }
}

template <typename T>
void rnn_forward_row(int64_t H, int64_t act, T slope, const T* __restrict x,
                     const T* __restrict a, T* __restrict h) {
  switch (act) {
    case TANH:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) h[j] = std::tanh(x[j] + a[j]);
      break;
    case RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T p = x[j] + a[j];
        h[j] = p < T(0) ? T(0) : p;  // NaN stays NaN, as torch.relu
      }
      break;
    case LEAKY_RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T p = x[j] + a[j];
        h[j] = p > T(0) ? p : p * slope;
      }
      break;
    default:  // HARDTANH
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T p = x[j] + a[j];
        h[j] = p <= T(-1) ? T(-1) : (p >= T(1) ? T(1) : p);
      }
  }
}

// ---- backward, one member's row b at one time step ------------------------------------
// dh: the gradient reaching h_t (from the outputs and from step t+1 through W_hh).

template <typename T>
void lstm_backward_row(int64_t H, const T* __restrict gout, const T* __restrict dh_rec,
                       T* __restrict dc, const T* __restrict c_prev, const T* __restrict s,
                       T* __restrict dx) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T i = s[j], f = s[H + j], g = s[2 * H + j], o = s[3 * H + j], tc = s[4 * H + j];
    T dh = gout[j] + dh_rec[j];
    T dcj = dc[j] + dh * o * (T(1) - tc * tc);
    dx[j] = dcj * g * i * (T(1) - i);
    dx[H + j] = dcj * c_prev[j] * f * (T(1) - f);
    dx[2 * H + j] = dcj * i * (T(1) - g * g);
    dx[3 * H + j] = dh * tc * o * (T(1) - o);
    dc[j] = dcj * f;
  }
}

template <typename T>
void gru_backward_row(int64_t H, const T* __restrict gout, const T* __restrict dh_rec,
                      const T* __restrict h_prev, const T* __restrict s, T* __restrict dx,
                      T* __restrict dgh, T* __restrict direct) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    T r = s[j], z = s[H + j], n = s[2 * H + j], hn = s[3 * H + j];
    T dh = gout[j] + dh_rec[j];
    T dpn = dh * (T(1) - z) * (T(1) - n * n);
    T dpr = dpn * hn * r * (T(1) - r);
    T dpz = dh * (h_prev[j] - n) * z * (T(1) - z);
    dx[j] = dpr;
    dx[H + j] = dpz;
    dx[2 * H + j] = dpn;
    dgh[j] = dpr;
    dgh[H + j] = dpz;
    dgh[2 * H + j] = dpn * r;
    direct[j] = dh * z;
  }
}

template <typename T>
void rnn_backward_row(int64_t H, int64_t act, T slope, const T* __restrict gout,
                      const T* __restrict dh_rec, const T* __restrict h, T* __restrict dx) {
  switch (act) {
    case TANH:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dx[j] = (gout[j] + dh_rec[j]) * (T(1) - h[j] * h[j]);
      break;
    case RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dx[j] = h[j] > T(0) ? gout[j] + dh_rec[j] : T(0);
      break;
    case LEAKY_RELU:
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        T dh = gout[j] + dh_rec[j];
        dx[j] = h[j] > T(0) ? dh : dh * slope;
      }
      break;
    default:  // HARDTANH: the gradient passes where -1 < pre < 1, i.e. where -1 < h < 1
#pragma omp simd
      for (int64_t j = 0; j < H; ++j)
        dx[j] = (h[j] > T(-1) && h[j] < T(1)) ? gout[j] + dh_rec[j] : T(0);
  }
}

int64_t gate_blocks(int64_t cell) { return cell == LSTM ? 4 : (cell == GRU ? 3 : 1); }

void check(int64_t cell, const at::Tensor& xproj, const at::Tensor& w_hh,
           const at::Tensor& start, const at::Tensor& act) {
  TORCH_CHECK(cell == RNN || cell == LSTM || cell == GRU, "batched_cells: unknown cell ", cell);
  TORCH_CHECK(xproj.dim() == 4 && xproj.is_contiguous(), "batched_cells: xproj [K,L,B,G*H]");
  TORCH_CHECK(w_hh.dim() == 3 && w_hh.size(1) == gate_blocks(cell) * w_hh.size(2),
              "batched_cells: w_hh [K,G*H,H]");
  TORCH_CHECK(xproj.size(0) == w_hh.size(0) && xproj.size(3) == w_hh.size(1),
              "batched_cells: xproj and w_hh disagree");
  TORCH_CHECK(start.scalar_type() == at::kLong && start.numel() == xproj.size(0) &&
                  act.scalar_type() == at::kLong && act.numel() == xproj.size(0),
              "batched_cells: start and act are int64 [K]");
}

// Returns {hbuf, cbuf, saved} (cbuf, saved empty where the cell has none).
std::vector<at::Tensor> sequence_forward(int64_t cell, const at::Tensor& xproj,
                                         const at::Tensor& w_hh, const at::Tensor& b_hh,
                                         const at::Tensor& start, const at::Tensor& act,
                                         double slope) {
  check(cell, xproj, w_hh, start, act);
  const int64_t K = xproj.size(0), L = xproj.size(1), B = xproj.size(2), GH = xproj.size(3);
  const int64_t H = w_hh.size(2);
  const int64_t S = cell == LSTM ? 5 * H : (cell == GRU ? 4 * H : 0);
  auto options = xproj.options();
  at::Tensor hbuf = at::zeros({K, L + 1, B, H}, options);
  at::Tensor cbuf = cell == LSTM ? at::zeros({K, L + 1, B, H}, options) : at::empty({0}, options);
  at::Tensor saved = S ? at::empty({K, L, B, S}, options) : at::empty({0}, options);
  at::Tensor acc = at::empty({K, B, GH}, options);
  at::Tensor w_t = w_hh.transpose(1, 2);
  at::Tensor bias = b_hh.contiguous();
  auto start_a = start.contiguous();
  auto act_a = act.contiguous();
  const int64_t* st = start_a.data_ptr<int64_t>();
  const int64_t* ac = act_a.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "batched_cells_forward", [&] {
    const scalar_t* xp = xproj.data_ptr<scalar_t>();
    const scalar_t* ap = acc.data_ptr<scalar_t>();
    scalar_t* hp = hbuf.data_ptr<scalar_t>();
    scalar_t* cp = cell == LSTM ? cbuf.data_ptr<scalar_t>() : nullptr;
    scalar_t* sp = S ? saved.data_ptr<scalar_t>() : nullptr;
    const scalar_t* bp = cell == GRU ? bias.data_ptr<scalar_t>() : nullptr;
    const scalar_t sl = static_cast<scalar_t>(slope);
    for (int64_t t = 0; t < L; ++t) {
      at::bmm_out(acc, hbuf.select(1, t), w_t);
      for (int64_t k = 0; k < K; ++k) {
        if (t < st[k]) continue;  // held: h and c stay zero (hbuf, cbuf are zeroed)
        for (int64_t b = 0; b < B; ++b) {
          const scalar_t* x = xp + ((k * L + t) * B + b) * GH;
          const scalar_t* a = ap + (k * B + b) * GH;
          const int64_t prev = ((k * (L + 1) + t) * B + b) * H;  // slot t = h_{t-1}
          const int64_t next = prev + B * H;                      // slot t+1 = h_t
          scalar_t* s = S ? sp + ((k * L + t) * B + b) * S : nullptr;
          if (cell == LSTM) {
            lstm_forward_row(H, x, a, cp + prev, cp + next, hp + next, s);
          } else if (cell == GRU) {
            gru_forward_row(H, x, a, bp + k * GH, hp + prev, hp + next, s);
          } else {
            rnn_forward_row(H, ac[k], sl, x, a, hp + next);
          }
        }
      }
    }
  });
  return {hbuf, cbuf, saved};
}

// Returns {d xproj, d w_hh, d b_hh (GRU; else empty)}.
std::vector<at::Tensor> sequence_backward(int64_t cell, const at::Tensor& grad_h,
                                          const at::Tensor& hbuf, const at::Tensor& cbuf,
                                          const at::Tensor& saved, const at::Tensor& w_hh,
                                          const at::Tensor& start, const at::Tensor& act,
                                          double slope) {
  const int64_t K = hbuf.size(0), L = hbuf.size(1) - 1, B = hbuf.size(2), H = hbuf.size(3);
  const int64_t GH = w_hh.size(1);
  const int64_t S = saved.dim() == 4 ? saved.size(3) : 0;
  TORCH_CHECK(grad_h.is_contiguous() && grad_h.sizes() == at::IntArrayRef({K, L, B, H}),
              "batched_cells: grad_h [K,L,B,H] contiguous");
  auto options = hbuf.options();
  at::Tensor dx = at::empty({K, L, B, GH}, options);
  at::Tensor dgh = cell == GRU ? at::empty({K, L, B, GH}, options) : dx;
  at::Tensor dh_rec = at::zeros({K, B, H}, options);
  at::Tensor dc = cell == LSTM ? at::zeros({K, B, H}, options) : at::empty({0}, options);
  at::Tensor direct = cell == GRU ? at::zeros({K, B, H}, options) : at::empty({0}, options);
  auto start_a = start.contiguous();
  auto act_a = act.contiguous();
  const int64_t* st = start_a.data_ptr<int64_t>();
  const int64_t* ac = act_a.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(hbuf.scalar_type(), "batched_cells_backward", [&] {
    const scalar_t* gp = grad_h.data_ptr<scalar_t>();
    const scalar_t* hp = hbuf.data_ptr<scalar_t>();
    const scalar_t* cp = cell == LSTM ? cbuf.data_ptr<scalar_t>() : nullptr;
    const scalar_t* sp = S ? saved.data_ptr<scalar_t>() : nullptr;
    scalar_t* dxp = dx.data_ptr<scalar_t>();
    scalar_t* dghp = dgh.data_ptr<scalar_t>();
    const scalar_t* drp = dh_rec.data_ptr<scalar_t>();
    scalar_t* dcp = cell == LSTM ? dc.data_ptr<scalar_t>() : nullptr;
    scalar_t* dip = cell == GRU ? direct.data_ptr<scalar_t>() : nullptr;
    const scalar_t sl = static_cast<scalar_t>(slope);
    for (int64_t t = L - 1; t >= 0; --t) {
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t b = 0; b < B; ++b) {
          const int64_t row = (k * L + t) * B + b;
          scalar_t* x = dxp + row * GH;
          if (t < st[k]) {  // held: no dependence on the weights
            std::fill(x, x + GH, scalar_t(0));
            if (cell == GRU) {
              std::fill(dghp + row * GH, dghp + (row + 1) * GH, scalar_t(0));
              std::fill(dip + (k * B + b) * H, dip + (k * B + b + 1) * H, scalar_t(0));
            }
            continue;
          }
          const scalar_t* go = gp + row * H;
          const scalar_t* dr = drp + (k * B + b) * H;
          const int64_t prev = ((k * (L + 1) + t) * B + b) * H;
          const int64_t next = prev + B * H;
          if (cell == LSTM) {
            lstm_backward_row(H, go, dr, dcp + (k * B + b) * H, cp + prev, sp + row * S, x);
          } else if (cell == GRU) {
            gru_backward_row(H, go, dr, hp + prev, sp + row * S, x, dghp + row * GH,
                             dip + (k * B + b) * H);
          } else {
            rnn_backward_row(H, ac[k], sl, go, dr, hp + next, x);
          }
        }
      }
      if (t > 0) {  // the gradient reaching h_{t-1} through W_hh (and the GRU's z h term)
        if (cell == GRU) {
          at::baddbmm_out(dh_rec, direct, dgh.select(1, t), w_hh);
        } else {
          at::bmm_out(dh_rec, dx.select(1, t), w_hh);
        }
      }
    }
  });
  at::Tensor h_prev = hbuf.narrow(1, 0, L).reshape({K, L * B, H});
  at::Tensor dw = at::bmm(dgh.view({K, L * B, GH}).transpose(1, 2), h_prev);
  at::Tensor db = cell == GRU ? dgh.sum({1, 2}) : at::empty({0}, options);
  return {dx, dw, db};
}

}  // namespace

TORCH_LIBRARY(batched_cells, m) {
  m.def("sequence_forward", &sequence_forward);
  m.def("sequence_backward", &sequence_backward);
}
