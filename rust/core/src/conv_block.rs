//! A fused first block of a pooling Conv-4 (Snell et al.): 3x3 convolution (padding 1),
//! BatchNorm with the batch's statistics, 2x2 max-pooling and ReLU, forward and backward,
//! for training on the CPU.
//!
//! Unfused, the block writes and reads back several full-resolution maps (`N x C x H x W`
//! floats, 24 MB for a 20-way 1-shot 5-query Omniglot episode) in each direction; here
//! nothing of full resolution is stored. The BatchNorm statistics come from the input
//! patches' first and second moments (a `K x K` matrix, `K = 9 * in_channels`, in f64):
//! the convolution is linear, so `mean_c = b_c + w_c . E[p]` and `var_c = w_c' Cov[p] w_c`.
//! The backward needs the gradient with respect to the parameters only (the block's input
//! is data), and the same moments turn its dense terms into `K x C` products: one pass over
//! the pooling windows, recomputing the maps, gives the rest.

// The per-image kernels take the folded parameters one slice each.
#![allow(clippy::too_many_arguments)]

use rayon::prelude::*;

use crate::error::{checked_product, value_err, Result};
use crate::memory::{bytes_of, check_bytes};
use crate::pool;
use crate::prototypes::check_finite;

/// `fn $name(args) -> ret` calling `$body::<FMA>` (an `#[inline(always)]` fn of the same
/// arguments, generic over whether its multiply-adds are fused, see [`madd`]) compiled for
/// AVX2 and FMA where the processor has them: the portable build targets SSE2, and these
/// loops run twice as wide with AVX2.
macro_rules! dispatch_avx2 {
    ($name:ident => $body:ident ($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn fast($($arg: $ty),*) -> $ret {
                    $body::<true>($($arg),*)
                }
                // SAFETY: the processor has AVX2 and FMA (checked just above).
                return unsafe { fast($($arg),*) };
            }
            $body::<{ $crate::conv_block::PORTABLE_FMA }>($($arg),*)
        }
    };
}
pub(crate) use dispatch_avx2;

/// Whether the portable build has fused multiply-add instructions (aarch64 always does).
pub(crate) const PORTABLE_FMA: bool = cfg!(any(target_arch = "aarch64", target_feature = "fma"));

/// `a * b + c`, as one fused multiply-add (one rounding, one instruction) where the code is
/// compiled for FMA: Rust never contracts `a * b + c` by itself, and without FMA
/// `mul_add` would be a library call.
#[inline(always)]
pub(crate) fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// `sum_i a[i] * b[i]`: f32 lanes, then f64.
#[inline(always)]
pub(crate) fn dot<const FMA: bool>(a: &[f32], b: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(u, v)| u * v)
        .sum();
    for (u, v) in ca.zip(cb) {
        for ((l, &u), &v) in lanes.iter_mut().zip(u).zip(v) {
            *l = madd::<FMA>(u, v, *l);
        }
    }
    (lanes.iter().sum::<f32>() + tail) as f64
}

/// Shape of a block's input and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    /// Output channels.
    pub c: usize,
}

impl BlockShape {
    /// Values per input patch (`9 * cin`).
    pub fn k(&self) -> usize {
        9 * self.cin
    }
    /// Pooled output side lengths (floor).
    pub fn pooled(&self) -> (usize, usize) {
        (self.h / 2, self.w / 2)
    }
    fn pixels(&self) -> usize {
        self.n * self.h * self.w
    }
    /// Checks `x`, `weight` and the per-channel vectors `(values, name)`: lengths, finite
    /// values (variances `>= 0`), `eps` finite and `> 0`, and that the per-image sums fit in
    /// memory.
    pub(crate) fn check(
        &self,
        x: &[f32],
        weight: &[f32],
        per_channel: &[(&[f32], &str)],
        eps: f32,
    ) -> Result<()> {
        let BlockShape { n, cin, h, w, c } = *self;
        if [n, cin, h, w].contains(&0) {
            return value_err(format!(
                "x: every dimension must be >= 1, got shape ({n}, {cin}, {h}, {w})"
            ));
        }
        if c == 0 {
            return value_err(format!(
                "weight: needs at least one output channel, got shape (0, {cin}, 3, 3)"
            ));
        }
        let want_x = checked_product(&[n, cin, h, w], "x")?;
        if x.len() != want_x {
            return value_err(format!("x: expected {want_x} values, got {}", x.len()));
        }
        let want_w = checked_product(&[c, cin, 9], "weight")?;
        if weight.len() != want_w {
            return value_err(format!(
                "weight: expected {want_w} values ({c} x {cin} x 3 x 3), got {}",
                weight.len()
            ));
        }
        for &(v, name) in per_channel {
            if v.len() != c {
                return value_err(format!("{name}: expected {c} values, got {}", v.len()));
            }
        }
        if !(eps > 0.0 && eps.is_finite()) {
            return value_err(format!("eps: must be finite and > 0, got {eps}"));
        }
        check_finite(x, "x")?;
        check_finite(weight, "weight")?;
        for &(v, name) in per_channel {
            check_finite(v, name)?;
            if name == "var" {
                if let Some((i, v)) = v.iter().enumerate().find(|(_, v)| **v < 0.0) {
                    return value_err(format!("var: must be >= 0, got {v} at channel {i}"));
                }
            }
        }
        self.check_scratch()
    }
    /// The per-image sums the kernels keep (patch moments `K x K`, parameter gradients
    /// `K x C`) must fit in memory: `cin` large against the images makes them outgrow `x`.
    fn check_scratch(&self) -> Result<()> {
        let k = checked_product(&[9, self.cin], "x")?;
        let per_image = k
            .checked_mul(k)
            .zip(checked_product(&[k + 2, self.c], "weight").ok())
            .and_then(|(a, b)| a.checked_add(b));
        let what = "x: the per-image sums of the block's patches";
        let bytes = per_image
            .and_then(|v| v.checked_mul(self.n + 1))
            .ok_or_else(|| crate::Error::Value(format!("{what}: size overflows")))?;
        check_bytes(bytes_of::<f64>(&[bytes], what)?, what)
    }
    /// Checks that the images can be pooled 2x2 and that the pooled map `name` has `len`
    /// values.
    fn check_pooled(&self, len: usize, name: &str) -> Result<()> {
        if self.h < 2 || self.w < 2 {
            return value_err(format!(
                "x: images must be at least 2x2 for 2x2 pooling, got {}x{}",
                self.h, self.w
            ));
        }
        let (hp, wp) = self.pooled();
        let want = checked_product(&[self.n, hp, wp, self.c], name)?;
        if len != want {
            return value_err(format!("{name}: expected {want} values, got {len}"));
        }
        Ok(())
    }
}

/// The tests' reference convolution (this block's and the strided block's): a plain 3x3
/// one with padding 1 and `stride`, in f64: `(N, C, H', W')` with `H' = (H - 1) / stride + 1`,
/// and `(H', W')`.
#[cfg(test)]
pub(crate) fn conv3x3_f64(
    x: &[f32],
    sh: BlockShape,
    weight: &[f32],
    bias: &[f32],
    stride: usize,
) -> (Vec<f64>, (usize, usize)) {
    let (k, cc) = (sh.k(), sh.c);
    let (oh, ow) = ((sh.h - 1) / stride + 1, (sh.w - 1) / stride + 1);
    let mut z = vec![0f64; sh.n * cc * oh * ow];
    for n in 0..sh.n {
        for c in 0..cc {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[c] as f64;
                    for t in 0..k {
                        let (ci, dy, dx) = (t / 9, (t / 3) % 3, t % 3);
                        let yy = (stride * oy + dy) as isize - 1;
                        let xx = (stride * ox + dx) as isize - 1;
                        if yy >= 0 && xx >= 0 && (yy as usize) < sh.h && (xx as usize) < sh.w {
                            let v =
                                x[((n * sh.cin + ci) * sh.h + yy as usize) * sh.w + xx as usize];
                            acc += weight[c * k + t] as f64 * v as f64;
                        }
                    }
                    z[((n * cc + c) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (z, (oh, ow))
}

/// The batch statistics of the convolution's output, per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// Biased (divided by the number of pixels), as the normalisation uses it.
    pub var: Vec<f32>,
}

/// Sums over every pixel's patch `p` (zero padding included): `s[k] = sum p_k` and
/// `m[k * K + l] = sum p_k p_l`.
struct Moments {
    s: Vec<f64>,
    m: Vec<f64>,
}

/// The pixels of a 2x2 pooling window, row-major (torch's order for ties).
const WINDOW: [(usize, usize); 4] = [(0, 0), (0, 1), (1, 0), (1, 1)];

/// The zero-padded `(cin, h + 2, w + 2)` copy of image `img`.
pub(crate) fn padded(img: &[f32], sh: &BlockShape, out: &mut Vec<f32>) {
    let (ph, pw) = (sh.h + 2, sh.w + 2);
    out.clear();
    out.resize(sh.cin * ph * pw, 0.0);
    for (plane, dst) in img.chunks(sh.h * sh.w).zip(out.chunks_mut(ph * pw)) {
        for (row, d) in plane.chunks(sh.w).zip(dst.chunks_mut(pw).skip(1)) {
            d[1..=sh.w].copy_from_slice(row);
        }
    }
}

/// The patch of pixel `(y, x)` from a padded image, tap `k = (ci * 3 + dy) * 3 + dx`.
#[inline(always)]
fn patch(pad: &[f32], sh: &BlockShape, y: usize, x: usize, out: &mut [f32]) {
    let (ph, pw) = (sh.h + 2, sh.w + 2);
    for ci in 0..sh.cin {
        for dy in 0..3 {
            let row = &pad[ci * ph * pw + (y + dy) * pw + x..];
            out[(ci * 3 + dy) * 3..(ci * 3 + dy) * 3 + 3].copy_from_slice(&row[..3]);
        }
    }
}

#[inline(always)]
fn moments_image_body<const FMA: bool>(
    img: &[f32],
    sh: &BlockShape,
    pad: &mut Vec<f32>,
) -> Moments {
    let k = sh.k();
    padded(img, sh, pad);
    let (ph, pw) = (sh.h + 2, sh.w + 2);
    // Tap `t` of every pixel's patch is the padded image shifted by its offset, so each
    // moment is a sum over rows of dot products of two shifted rows (vectorised along x).
    let row = |t: usize, y: usize| {
        let (ci, dy, dx) = (t / 9, (t / 3) % 3, t % 3);
        &pad[ci * ph * pw + (y + dy) * pw + dx..][..sh.w]
    };
    let mut s = vec![0f64; k];
    let mut m = vec![0f64; k * k];
    for a in 0..k {
        for b in a..k {
            let mut acc = 0f64;
            for y in 0..sh.h {
                // f32 within a row (a few dozen terms), f64 across rows.
                acc += dot::<FMA>(row(a, y), row(b, y));
            }
            m[a * k + b] = acc;
            m[b * k + a] = acc;
        }
        s[a] = (0..sh.h)
            .map(|y| row(a, y).iter().sum::<f32>() as f64)
            .sum();
    }
    Moments { s, m }
}

dispatch_avx2!(moments_image => moments_image_body(
    img: &[f32], sh: &BlockShape, pad: &mut Vec<f32>) -> Moments);

/// The patch of pixel `(y, x)` minus the batch's mean patch `mu`: the BatchNorm subtracts
/// the mean anyway, and centring first keeps large constant parts (a white background)
/// from cancelling in float sums.
#[inline(always)]
pub(crate) fn centred_patch(
    pad: &[f32],
    sh: &BlockShape,
    y: usize,
    x: usize,
    mu: &[f32],
    out: &mut [f32],
) {
    patch(pad, sh, y, x, out);
    for (p, m) in out.iter_mut().zip(mu) {
        *p -= m;
    }
}

impl Moments {
    /// The mean patch.
    fn mean(&self, pixels: usize) -> Vec<f32> {
        self.s.iter().map(|s| (s / pixels as f64) as f32).collect()
    }
}

fn moments(x: &[f32], sh: &BlockShape) -> Moments {
    let k = sh.k();
    let per_image = |img: &[f32], pad: &mut Vec<f32>| moments_image(img, sh, pad);
    let init = Vec::new;
    let add = |mut a: Moments, b: Moments| {
        for (x, y) in a.s.iter_mut().zip(&b.s) {
            *x += y;
        }
        for (x, y) in a.m.iter_mut().zip(&b.m) {
            *x += y;
        }
        a
    };
    let zero = || Moments {
        s: vec![0.0; k],
        m: vec![0.0; k * k],
    };
    let plane = sh.cin * sh.h * sh.w;
    // Per image in parallel, summed in image order: the same bits for any thread count.
    let each: Vec<Moments> = pool::install_if(sh.n > 1, |par| {
        if par {
            x.par_chunks(plane)
                .map_init(init, |st, img| per_image(img, st))
                .collect()
        } else {
            let mut st = init();
            x.chunks(plane).map(|img| per_image(img, &mut st)).collect()
        }
    });
    each.into_iter().fold(zero(), add)
}

/// Per-channel statistics from the moments: `(mean, biased var)` in f64.
fn stats_from(mo: &Moments, weight: &[f32], bias: &[f32], sh: &BlockShape) -> BatchStats {
    let (k, m) = (sh.k(), sh.pixels() as f64);
    let mu: Vec<f64> = mo.s.iter().map(|s| s / m).collect();
    let mut mean = Vec::with_capacity(sh.c);
    let mut var = Vec::with_capacity(sh.c);
    for (c, wc) in weight.chunks(k).enumerate() {
        let wc: Vec<f64> = wc.iter().map(|&v| v as f64).collect();
        let dot_mu: f64 = wc.iter().zip(&mu).map(|(a, b)| a * b).sum();
        let mut v = 0.0;
        for a in 0..k {
            let row: f64 = (0..k).map(|b| mo.m[a * k + b] / m * wc[b]).sum();
            v += wc[a] * row;
        }
        mean.push((bias[c] as f64 + dot_mu) as f32);
        var.push((v - dot_mu * dot_mu).max(0.0) as f32);
    }
    BatchStats { mean, var }
}

/// `w[c * K + k]` to `out[k * C + c]`, each row scaled by `scale[c]`.
pub(crate) fn transposed(weight: &[f32], scale: &[f32], sh: &BlockShape) -> Vec<f32> {
    let (k, cc) = (sh.k(), sh.c);
    let mut out = vec![0f32; k * cc];
    for c in 0..cc {
        for t in 0..k {
            out[t * cc + c] = weight[c * k + t] * scale[c];
        }
    }
    out
}

/// `b + sum_k p[k] * wt[k]` for the 64 channels from `c0` (rows of `wt` hold all `cc`
/// channels), in eight vector registers: independent chains, where one would wait on each
/// addition's latency. The same operations, in the same order, as [`affine`].
#[inline(always)]
pub(crate) fn affine64<const FMA: bool>(
    b: &[f32],
    wt: &[f32],
    cc: usize,
    c0: usize,
    p: &[f32],
) -> [[f32; 8]; 8] {
    let mut acc = [[0f32; 8]; 8];
    for (a, bb) in acc.iter_mut().zip(b[c0..c0 + 64].chunks_exact(8)) {
        a.copy_from_slice(bb);
    }
    for (&pt, row) in p.iter().zip(wt.chunks_exact(cc)) {
        for (a, w) in acc.iter_mut().zip(row[c0..c0 + 64].chunks_exact(8)) {
            for (a, &w) in a.iter_mut().zip(w) {
                *a = madd::<FMA>(pt, w, *a);
            }
        }
    }
    acc
}

/// `acc = b + sum_k p[k] * wt[k]` (rows of `C`).
#[inline(always)]
pub(crate) fn affine<const FMA: bool>(acc: &mut [f32], b: &[f32], wt: &[f32], p: &[f32]) {
    acc.copy_from_slice(b);
    for (row, &pk) in wt.chunks_exact(acc.len()).zip(p) {
        for (a, &w) in acc.iter_mut().zip(row) {
            *a = madd::<FMA>(pk, w, *a);
        }
    }
}

/// Training forward: `out` (`N x H/2 x W/2 x C`, channels last) gets
/// `relu(maxpool(batchnorm(conv(x))))`; returns the batch statistics (for the running
/// averages and the backward). `x` is `(N, cin, H, W)`, `weight` `(C, cin, 3, 3)`.
#[allow(clippy::too_many_arguments)]
pub fn forward(
    x: &[f32],
    sh: BlockShape,
    weight: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<BatchStats> {
    let vectors = [(bias, "bias"), (gamma, "gamma"), (beta, "beta")];
    sh.check(x, weight, &vectors, eps)?;
    sh.check_pooled(out.len(), "out")?;
    let (hp, wp) = sh.pooled();
    let mo = moments(x, &sh);
    let stats = stats_from(&mo, weight, bias, &sh);
    let mu = mo.mean(sh.pixels());
    // y = a (z - mean) + beta = a w . (p - mu) + beta, a = gamma / sqrt(var + eps): a is
    // folded into the weights.
    let a: Vec<f32> = (0..sh.c)
        .map(|c| gamma[c] / (stats.var[c] + eps).sqrt())
        .collect();
    let wt = transposed(weight, &a, &sh);
    let per_image = |img: &[f32], dst: &mut [f32], st: &mut (Vec<f32>, Vec<f32>, Vec<f32>)| {
        forward_image(img, dst, &sh, &wt, beta, &mu, st)
    };
    run_images(x, out, &sh, hp * wp * sh.c, per_image);
    Ok(stats)
}

/// One image of `forward`: `dst` (its pooled outputs, channels last) from the folded
/// weights `wt` (`K x C`), offsets `b` and the mean patch `mu`.
#[inline(always)]
fn forward_image_body<const FMA: bool>(
    img: &[f32],
    dst: &mut [f32],
    sh: &BlockShape,
    wt: &[f32],
    b: &[f32],
    mu: &[f32],
    (pad, p, y): &mut (Vec<f32>, Vec<f32>, Vec<f32>),
) {
    let (k, cc) = (sh.k(), sh.c);
    let (_, wp) = sh.pooled();
    padded(img, sh, pad);
    p.resize(4 * k, 0.0);
    let wide = cc / 64 * 64;
    for (i, o) in dst.chunks_exact_mut(cc).enumerate() {
        let (py, px) = (i / wp, i % wp);
        for (pj, (dy, dx)) in p.chunks_exact_mut(k).zip(WINDOW) {
            centred_patch(pad, sh, 2 * py + dy, 2 * px + dx, mu, pj);
        }
        for c0 in (0..wide).step_by(64) {
            let mut top = [[f32::NEG_INFINITY; 8]; 8];
            for pj in p.chunks_exact(k) {
                let v = affine64::<FMA>(b, wt, cc, c0, pj);
                for (t, v) in top.iter_mut().zip(v) {
                    for (t, v) in t.iter_mut().zip(v) {
                        *t = t.max(v);
                    }
                }
            }
            for (d, t) in o[c0..c0 + 64].chunks_exact_mut(8).zip(top) {
                for (d, t) in d.iter_mut().zip(t) {
                    *d = t.max(0.0);
                }
            }
        }
        if wide < cc {
            let o = &mut o[wide..];
            o.fill(f32::NEG_INFINITY);
            for pj in p.chunks_exact(k) {
                affine::<FMA>(y, b, wt, pj);
                for (o, &v) in o.iter_mut().zip(&y[wide..]) {
                    *o = o.max(v);
                }
            }
            for o in o.iter_mut() {
                *o = o.max(0.0);
            }
        }
    }
}

dispatch_avx2!(forward_image => forward_image_body(
    img: &[f32],
    dst: &mut [f32],
    sh: &BlockShape,
    wt: &[f32],
    b: &[f32],
    mu: &[f32],
    st: &mut (Vec<f32>, Vec<f32>, Vec<f32>),
) -> ());

/// Runs `f(image, its output, scratch)` for every image, in parallel for several.
fn run_images<F>(x: &[f32], out: &mut [f32], sh: &BlockShape, out_per: usize, f: F)
where
    F: Fn(&[f32], &mut [f32], &mut (Vec<f32>, Vec<f32>, Vec<f32>)) + Sync,
{
    let plane = sh.cin * sh.h * sh.w;
    let init = || (Vec::new(), vec![0f32; sh.k()], vec![0f32; sh.c]);
    pool::install_if(sh.n > 1, |par| {
        if par {
            x.par_chunks(plane)
                .zip(out.par_chunks_mut(out_per))
                .for_each_init(init, |st, (img, o)| f(img, o, st));
        } else {
            let mut st = init();
            for (img, o) in x.chunks(plane).zip(out.chunks_mut(out_per)) {
                f(img, o, &mut st);
            }
        }
    });
}

/// Gradients of the block's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockGrads {
    /// `(C, cin, 3, 3)`
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// Sums of one pass over the pooling windows.
struct WindowSums {
    /// `sum g` and `sum g * xhat` per channel, `g` the gradient at the window's maximum.
    dbeta: Vec<f64>,
    dgamma: Vec<f64>,
    /// `sum g_c p_k` over the windows, `p` the patch of channel `c`'s maximum: `k * C + c`.
    gp: Vec<f64>,
}

/// One image of `backward`: its sums over the pooling windows, `g_img` the gradient of its
/// pooled outputs, `wx` the weights folded to give `xhat = wx . (p - mu)` (`bx` zeros).
#[inline(always)]
fn backward_image_body<const FMA: bool>(
    img: &[f32],
    g_img: &[f32],
    sh: &BlockShape,
    wx: &[f32],
    bx: &[f32],
    mu: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> WindowSums {
    let (k, cc) = (sh.k(), sh.c);
    let (_, wp) = sh.pooled();
    let mut sums = WindowSums {
        dbeta: vec![0.0; cc],
        dgamma: vec![0.0; cc],
        gp: vec![0.0; k * cc],
    };
    let mut pad = Vec::new();
    padded(img, sh, &mut pad);
    let mut patches = vec![0f32; 4 * k];
    let mut xh = vec![0f32; 4 * cc];
    let (wide, mut rest) = (cc / 64 * 64, vec![0f32; cc]);
    let (mut db, mut dg, mut gp) = (vec![0f32; cc], vec![0f32; cc], vec![0f32; k * cc]);
    // Per channel: which pixel of the window is its maximum, and the gradient it takes.
    let mut which = vec![0f32; cc];
    let mut gj = vec![0f32; cc];
    let mut gsel = vec![0f32; 4 * cc];
    for (py, g_row) in g_img.chunks_exact(wp * cc).enumerate() {
        for (px, g) in g_row.chunks_exact(cc).enumerate() {
            for (j, (dy, dx)) in WINDOW.into_iter().enumerate() {
                let p = &mut patches[j * k..(j + 1) * k];
                centred_patch(&pad, sh, 2 * py + dy, 2 * px + dx, mu, p);
                let xj = &mut xh[j * cc..(j + 1) * cc];
                for c0 in (0..wide).step_by(64) {
                    let v = affine64::<FMA>(bx, wx, cc, c0, p);
                    for (d, v) in xj[c0..c0 + 64].chunks_exact_mut(8).zip(v) {
                        d.copy_from_slice(&v);
                    }
                }
                if wide < cc {
                    affine::<FMA>(&mut rest, bx, wx, p);
                    xj[wide..].copy_from_slice(&rest[wide..]);
                }
            }
            // The first maximum in row-major order takes the gradient (as torch's
            // max-pooling; strict comparisons); the ReLU passes it where that maximum is
            // positive. One zipped pass over the channels with bit-mask selects: it
            // vectorises (a plain `if` becomes masked stores, microcoded on AMD).
            let (x0, rest) = xh.split_at(cc);
            let (x1, rest) = rest.split_at(cc);
            let (x2, x3) = rest.split_at(cc);
            let xs = x0.iter().zip(x1).zip(x2.iter().zip(x3));
            let params = gamma.iter().zip(beta);
            for ((((w, o), (d, e)), &gv), (((&a0, &a1), (&a2, &a3)), (&ga, &be))) in which
                .iter_mut()
                .zip(gj.iter_mut())
                .zip(db.iter_mut().zip(dg.iter_mut()))
                .zip(g)
                .zip(xs.zip(params))
            {
                let (mut top, mut top_x, mut at) = (ga * a0 + be, a0, 0.0f32);
                for (jf, x) in [(1.0f32, a1), (2.0, a2), (3.0, a3)] {
                    let y = ga * x + be;
                    let up = 0u32.wrapping_sub((y > top) as u32);
                    let pick = |new: f32, old: f32| {
                        f32::from_bits((new.to_bits() & up) | (old.to_bits() & !up))
                    };
                    (top, top_x, at) = (pick(y, top), pick(x, top_x), pick(jf, at));
                }
                let gc = if top > 0.0 { gv } else { 0.0 };
                *d += gc;
                *e = madd::<FMA>(gc, top_x, *e);
                (*w, *o) = (at, gc);
            }
            // Each channel's gradient times the patch of its maximum, tap by tap, as
            // `sum_j g_j p_j` with `g_j` zero but at the maximum: multiply-adds of an exact
            // zero leave the sum as it is, and they vectorise where per-channel selects
            // of the patch value do not.
            for (j, gs) in gsel.chunks_exact_mut(cc).enumerate() {
                let jf = j as f32;
                for ((g, &w), &gc) in gs.iter_mut().zip(&which).zip(&gj) {
                    *g = if w == jf { gc } else { 0.0 };
                }
            }
            let (g0, rest) = gsel.split_at(cc);
            let (g1, rest) = rest.split_at(cc);
            let (g2, g3) = rest.split_at(cc);
            for (t, row) in gp.chunks_exact_mut(cc).enumerate() {
                let (p0, p1, p2, p3) = (
                    patches[t],
                    patches[k + t],
                    patches[2 * k + t],
                    patches[3 * k + t],
                );
                for ((r, (&a0, &a1)), (&a2, &a3)) in
                    row.iter_mut().zip(g0.iter().zip(g1)).zip(g2.iter().zip(g3))
                {
                    let v = madd::<FMA>(a3, p3, madd::<FMA>(a2, p2, *r));
                    *r = madd::<FMA>(a1, p1, madd::<FMA>(a0, p0, v));
                }
            }
        }
    }
    // f32 sums over an image's windows (a few hundred terms), then f64.
    for (s, v) in sums
        .dbeta
        .iter_mut()
        .zip(&db)
        .chain(sums.dgamma.iter_mut().zip(&dg))
        .chain(sums.gp.iter_mut().zip(&gp))
    {
        *s += *v as f64;
    }
    sums
}

dispatch_avx2!(backward_image => backward_image_body(
    img: &[f32],
    g_img: &[f32],
    sh: &BlockShape,
    wx: &[f32],
    bx: &[f32],
    mu: &[f32],
    gamma: &[f32],
    beta: &[f32],
) -> WindowSums);

/// The window sums of [`backward`] over every image (`x`, with `dout` the gradient of the
/// pooled outputs): per image in parallel, summed in image order, so the same bits for any
/// thread count.
fn window_sums(
    x: &[f32],
    dout: &[f32],
    sh: &BlockShape,
    (wx, bx, mu): (&[f32], &[f32], &[f32]),
    (gamma, beta): (&[f32], &[f32]),
) -> WindowSums {
    let (hp, wp) = sh.pooled();
    let (k, cc) = (sh.k(), sh.c);
    let plane = sh.cin * sh.h * sh.w;
    let per_image =
        |img: &[f32], g_img: &[f32]| backward_image(img, g_img, sh, wx, bx, mu, gamma, beta);
    let add = |mut a: WindowSums, b: WindowSums| {
        for (x, y) in a
            .dbeta
            .iter_mut()
            .chain(a.dgamma.iter_mut())
            .chain(a.gp.iter_mut())
            .zip(b.dbeta.iter().chain(&b.dgamma).chain(&b.gp))
        {
            *x += y;
        }
        a
    };
    let zero = || WindowSums {
        dbeta: vec![0.0; cc],
        dgamma: vec![0.0; cc],
        gp: vec![0.0; k * cc],
    };
    let out_per = hp * wp * cc;
    let each: Vec<WindowSums> = pool::install_if(sh.n > 1, |par| {
        if par {
            x.par_chunks(plane)
                .zip(dout.par_chunks(out_per))
                .map(|(img, g)| per_image(img, g))
                .collect()
        } else {
            x.chunks(plane)
                .zip(dout.chunks(out_per))
                .map(|(img, g)| per_image(img, g))
                .collect()
        }
    });
    each.into_iter().fold(zero(), add)
}

/// Training backward: the parameters' gradients given `dout` (the gradient of `forward`'s
/// `out`, same layout) and the forward's `stats`.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    sh: BlockShape,
    weight: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    stats: &BatchStats,
    eps: f32,
    dout: &[f32],
) -> Result<BlockGrads> {
    let vectors = [
        (bias, "bias"),
        (gamma, "gamma"),
        (beta, "beta"),
        (&stats.mean[..], "mean"),
        (&stats.var[..], "var"),
    ];
    sh.check(x, weight, &vectors, eps)?;
    sh.check_pooled(dout.len(), "dout")?;
    check_finite(dout, "dout")?;
    let (k, cc) = (sh.k(), sh.c);
    let invstd: Vec<f32> = stats.var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    // xhat = (z - mean) * invstd, folded; y = gamma * xhat + beta.
    let wx = transposed(weight, &invstd, &sh);
    // Centred patches: xhat = wx . (p - mu), no offset (the bias cancels in the mean).
    let bx = vec![0f32; cc];
    let mo = moments(x, &sh);
    let mu = mo.mean(sh.pixels());
    let sums = window_sums(x, dout, &sh, (&wx, &bx, &mu), (gamma, beta));
    let m = sh.pixels() as f64;
    let mut grads = BlockGrads {
        weight: vec![0.0; cc * k],
        // sum dz = a (dbeta - m dbeta / m - dgamma / m sum xhat), and sum xhat = 0: the
        // bias before a BatchNorm has no effect (torch gives rounding noise).
        bias: vec![0.0; cc],
        gamma: sums.dgamma.iter().map(|&v| v as f32).collect(),
        beta: sums.dbeta.iter().map(|&v| v as f32).collect(),
    };
    // Centred second moments: sum over pixels of (p_l - mu_l)(p_t - mu_t).
    let cov: Vec<f64> = (0..k * k)
        .map(|i| mo.m[i] - mo.s[i / k] * mo.s[i % k] / m)
        .collect();
    for c in 0..cc {
        let a = gamma[c] as f64 * invstd[c] as f64;
        let dgamma = sums.dgamma[c];
        // dW = sum dz (p - mu) (sum dz = 0) = a (sum dy (p - mu) - dgamma / m sum xhat (p - mu)),
        // the dbeta term vanishing with sum (p - mu) = 0.
        for t in 0..k {
            let xhat_p: f64 = (0..k).map(|l| wx[l * cc + c] as f64 * cov[l * k + t]).sum();
            let v = sums.gp[t * cc + c] - dgamma / m * xhat_p;
            grads.weight[c * k + t] = (a * v) as f32;
        }
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{assert_numeric_gradients, lcg};

    /// The block computed plainly, in f64: conv, batch norm, ReLU, pool; and the numeric
    /// gradient of `sum(out * g)` by central differences.
    fn reference(
        x: &[f32],
        sh: BlockShape,
        p: &[Vec<f32>; 4],
        eps: f32,
        g: &[f32],
    ) -> (Vec<f64>, f64) {
        let (cc, hw) = (sh.c, sh.h * sh.w);
        let (z, _) = conv3x3_f64(x, sh, &p[0], &p[1], 1);
        let (hp, wp) = sh.pooled();
        let mut out = vec![0f64; sh.n * hp * wp * cc];
        let m = (sh.n * hw) as f64;
        for c in 0..cc {
            let vals: Vec<f64> = (0..sh.n)
                .flat_map(|n| z[(n * cc + c) * hw..(n * cc + c + 1) * hw].to_vec())
                .collect();
            let mean = vals.iter().sum::<f64>() / m;
            let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
            for n in 0..sh.n {
                for py in 0..hp {
                    for px in 0..wp {
                        let mut best = f64::NEG_INFINITY;
                        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                            let v = z[(n * cc + c) * hw + (2 * py + dy) * sh.w + 2 * px + dx];
                            let y = p[2][c] as f64 * (v - mean) / (var + eps as f64).sqrt()
                                + p[3][c] as f64;
                            best = best.max(y);
                        }
                        out[((n * hp + py) * wp + px) * cc + c] = best.max(0.0);
                    }
                }
            }
        }
        let loss = out.iter().zip(g).map(|(o, &g)| o * g as f64).sum();
        (out, loss)
    }

    #[test]
    fn matches_a_plain_f64_reference_and_its_numeric_gradient() {
        for sh in [
            BlockShape {
                n: 3,
                cin: 1,
                h: 6,
                w: 5,
                c: 4,
            },
            BlockShape {
                n: 2,
                cin: 2,
                h: 4,
                w: 7,
                c: 3,
            },
            // 64 channels and more: the register-blocked path, and the rest.
            BlockShape {
                n: 2,
                cin: 1,
                h: 4,
                w: 5,
                c: 72,
            },
        ] {
            let mut seed = 7u64;
            let x: Vec<f32> = (0..sh.n * sh.cin * sh.h * sh.w)
                .map(|_| lcg(&mut seed))
                .collect();
            let mut params = [
                (0..sh.c * sh.k())
                    .map(|_| lcg(&mut seed) * 0.5)
                    .collect::<Vec<f32>>(),
                (0..sh.c).map(|_| lcg(&mut seed)).collect(),
                (0..sh.c).map(|_| 1.0 + 0.3 * lcg(&mut seed)).collect(),
                (0..sh.c).map(|_| 0.3 * lcg(&mut seed)).collect(),
            ];
            let (hp, wp) = sh.pooled();
            let g: Vec<f32> = (0..sh.n * hp * wp * sh.c).map(|_| lcg(&mut seed)).collect();
            let eps = 1e-5;
            let mut out = vec![0f32; g.len()];
            let [w, b, ga, be] = &params;
            let stats = forward(&x, sh, w, b, ga, be, eps, &mut out).unwrap();
            let (want, _) = reference(&x, sh, &params, eps, &g);
            for (o, r) in out.iter().zip(&want) {
                assert!((*o as f64 - r).abs() < 1e-4, "{o} vs {r} ({sh:?})");
            }
            let grads = backward(&x, sh, w, b, ga, be, &stats, eps, &g).unwrap();
            let analytic = [&grads.weight[..], &grads.bias, &grads.gamma, &grads.beta];
            let loss = |p: &[Vec<f32>; 4]| reference(&x, sh, p, eps, &g).1;
            assert_numeric_gradients(&mut params, analytic, loss, &format!("{sh:?}"));
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        let sh = BlockShape {
            n: 1,
            cin: 1,
            h: 4,
            w: 4,
            c: 2,
        };
        let (x, w, v) = (vec![0f32; 16], vec![0f32; 18], vec![1f32; 2]);
        let mut out = vec![0f32; 8];
        assert!(forward(&x, sh, &w, &v, &v, &v, 1e-5, &mut out).is_ok());
        assert!(forward(&x[..15], sh, &w, &v, &v, &v, 1e-5, &mut out).is_err());
        assert!(forward(&x, sh, &w[..17], &v, &v, &v, 1e-5, &mut out).is_err());
        assert!(forward(&x, sh, &w, &v[..1], &v, &v, 1e-5, &mut out).is_err());
        assert!(forward(&x, sh, &w, &v, &v, &v, -1.0, &mut out).is_err());
        assert!(forward(&x, sh, &w, &v, &v, &v, 1e-5, &mut out[..7]).is_err());
        let tiny = BlockShape { h: 1, ..sh };
        assert!(forward(&x[..4], tiny, &w, &v, &v, &v, 1e-5, &mut out).is_err());
    }

    #[test]
    fn non_finite_values_and_negative_variances_are_errors() {
        let sh = BlockShape {
            n: 1,
            cin: 1,
            h: 4,
            w: 4,
            c: 2,
        };
        let (x, w, v) = (vec![0.5f32; 16], vec![0.1f32; 18], vec![1f32; 2]);
        let mut out = vec![0f32; 8];
        let err = |r: Result<BatchStats>| r.unwrap_err().to_string();
        let mut bad = x.clone();
        bad[3] = f32::INFINITY;
        assert!(err(forward(&bad, sh, &w, &v, &v, &v, 1e-5, &mut out)).starts_with("x: holds"));
        let nan = [1.0, f32::NAN];
        assert!(err(forward(&x, sh, &w, &v, &nan, &v, 1e-5, &mut out)).starts_with("gamma:"));
        assert!(err(forward(&x, sh, &w, &v, &v, &v, 0.0, &mut out)).starts_with("eps:"));
        let stats = forward(&x, sh, &w, &v, &v, &v, 1e-5, &mut out).unwrap();
        let neg = BatchStats {
            var: vec![1.0, -1.0],
            ..stats.clone()
        };
        let back = backward(&x, sh, &w, &v, &v, &v, &neg, 1e-5, &out).unwrap_err();
        assert!(back.to_string().starts_with("var: must be >= 0"), "{back}");
        let back = backward(&x, sh, &w, &v, &v, &v, &stats, 1e-5, &[f32::NAN; 8]).unwrap_err();
        assert!(back.to_string().starts_with("dout: holds"), "{back}");
        // Thousands of input channels on 1x1 images: the K x K moments outgrow any memory.
        let wide = BlockShape {
            cin: 1 << 28,
            h: 1,
            w: 1,
            ..sh
        };
        assert!(wide
            .check_scratch()
            .unwrap_err()
            .to_string()
            .starts_with("x:"));
    }
}
