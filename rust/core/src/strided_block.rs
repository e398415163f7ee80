//! A fused first block of Finn et al.'s Conv-4: 3x3 convolution with stride 2 (padding 1),
//! BatchNorm with the batch's statistics, ReLU; forward and the parameters' gradients.
//!
//! MAML adapts this network per task, and its query pass (75 images of a 5-way 15-query
//! task) spends a third of a CPU step in the first block alone: torch writes and reads back
//! the convolution's, the BatchNorm's and the ReLU's full-resolution maps in each direction.
//! Here the block reads the images, writes its output once, and the backward reads the
//! output (its ReLU mask) and its gradient once. As in [`crate::conv_block`], the BatchNorm
//! statistics come from the input patches' moments (the convolution is linear), the
//! block's input is data (no gradient with respect to it), and the parameters' gradients
//! are sums of the output gradient against the patches, turned into the BatchNorm's
//! gradients with the same moments. Unlike the pooling block, the output is materialised
//! (`N x C x H' x W'`, `H' = ceil(H / 2)`, torch's layout): the next convolution needs it.
//! (Channels-last output made the next convolution faster, but torch's channels-last ops
//! at one thread flipped ReLU masks at near-ties differently enough to slow MAML's
//! training: NCHW keeps the rest of the network's numerics those of torch's block.)

// The per-image kernels take the folded parameters one slice each.
#![allow(clippy::too_many_arguments)]

use rayon::prelude::*;

use crate::conv_block::{
    affine, affine64, centred_patch, dispatch_avx2, dot, madd, padded, transposed, BatchStats,
    BlockGrads, BlockShape,
};
use crate::error::{checked_product, value_err, Result};
use crate::pool;
use crate::prototypes::check_finite;

/// Output side of a 3x3, stride-2, padding-1 convolution.
pub fn out_side(side: usize) -> usize {
    side.div_ceil(2)
}

/// Output positions per image.
fn positions(sh: &BlockShape) -> usize {
    out_side(sh.h) * out_side(sh.w)
}

/// The columns of image `img` (im2col): `cols[t * P + i]` is tap `t = (ci * 3 + dy) * 3 +
/// dx` of output position `i` minus `mu[t]`.
#[inline(always)]
fn columns(img: &[f32], sh: &BlockShape, mu: &[f32], pad: &mut Vec<f32>, cols: &mut [f32]) {
    let (ph, pw) = (sh.h + 2, sh.w + 2);
    let (oh, ow) = (out_side(sh.h), out_side(sh.w));
    padded(img, sh, pad);
    for (t, (col, &m)) in cols.chunks_exact_mut(oh * ow).zip(mu).enumerate() {
        let (ci, dy, dx) = (t / 9, (t / 3) % 3, t % 3);
        for (oy, dst) in col.chunks_exact_mut(ow).enumerate() {
            let src = &pad[ci * ph * pw + (2 * oy + dy) * pw + dx..];
            for (d, s) in dst.iter_mut().zip(src.iter().step_by(2)) {
                *d = s - m;
            }
        }
    }
}

/// `sum_i a[i]`: f32 lanes, then f64.
#[inline(always)]
fn lane_sum(a: &[f32]) -> f64 {
    let mut lanes = [0f32; 8];
    let chunks = a.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for u in chunks {
        for (l, &u) in lanes.iter_mut().zip(u) {
            *l += u;
        }
    }
    (lanes.iter().sum::<f32>() + tail) as f64
}

/// One image's sums of its columns (`mu` subtracted): `s[t]`, and `m[a * K + b]` =
/// `sum_i cols[a][i] cols[b][i]` when `second`.
#[inline(always)]
fn moments_image_body<const FMA: bool>(
    img: &[f32],
    sh: &BlockShape,
    mu: &[f32],
    second: bool,
    (pad, cols): &mut (Vec<f32>, Vec<f32>),
) -> (Vec<f64>, Vec<f64>) {
    let (k, p) = (sh.k(), positions(sh));
    cols.resize(k * p, 0.0);
    columns(img, sh, mu, pad, cols);
    let col = |t: usize| &cols[t * p..(t + 1) * p];
    let s = (0..k).map(|t| lane_sum(col(t))).collect();
    let mut m = vec![0f64; if second { k * k } else { 0 }];
    if second {
        for a in 0..k {
            for b in a..k {
                let v = dot::<FMA>(col(a), col(b));
                m[a * k + b] = v;
                m[b * k + a] = v;
            }
        }
    }
    (s, m)
}

dispatch_avx2!(moments_image => moments_image_body(
    img: &[f32],
    sh: &BlockShape,
    mu: &[f32],
    second: bool,
    st: &mut (Vec<f32>, Vec<f32>),
) -> (Vec<f64>, Vec<f64>));

/// Per image (in parallel when `parallel`), summed in image order: the same bits for any
/// thread count.
fn per_image_sums<T: Send>(
    x: &[f32],
    sh: &BlockShape,
    parallel: bool,
    f: impl Fn(usize, &[f32], &mut (Vec<f32>, Vec<f32>)) -> T + Sync + Send,
) -> Vec<T> {
    let plane = sh.cin * sh.h * sh.w;
    pool::install_if(parallel && sh.n > 1, |par| {
        if par {
            x.par_chunks(plane)
                .enumerate()
                .map_init(Default::default, |st, (i, img)| f(i, img, st))
                .collect()
        } else {
            let mut st = Default::default();
            x.chunks(plane)
                .enumerate()
                .map(|(i, img)| f(i, img, &mut st))
                .collect()
        }
    })
}

/// The batch's mean patch and the centred second moments `sum (p - mu)(p - mu)'` (two
/// passes: centring first keeps a white background from cancelling in the sums).
fn moments(x: &[f32], sh: &BlockShape, parallel: bool) -> (Vec<f32>, Vec<f64>) {
    let (k, m) = (sh.k(), (sh.n * positions(sh)) as f64);
    let zeros = vec![0f32; k];
    let firsts = per_image_sums(x, sh, parallel, |_, img, st| {
        moments_image(img, sh, &zeros, false, st).0
    });
    let mut s = vec![0f64; k];
    for f in &firsts {
        for (a, b) in s.iter_mut().zip(f) {
            *a += b;
        }
    }
    let mu: Vec<f32> = s.iter().map(|v| (v / m) as f32).collect();
    let seconds = per_image_sums(x, sh, parallel, |_, img, st| {
        moments_image(img, sh, &mu, true, st)
    });
    let mut cov = vec![0f64; k * k];
    let mut s = vec![0f64; k];
    for (f, sec) in &seconds {
        for (a, b) in s.iter_mut().zip(f) {
            *a += b;
        }
        for (a, b) in cov.iter_mut().zip(sec) {
            *a += b;
        }
    }
    // `mu` is rounded to f32: remove what is left of the mean from the moments.
    for a in 0..k {
        for b in 0..k {
            cov[a * k + b] -= s[a] * s[b] / m;
        }
    }
    (mu, cov)
}

/// `dst[j * rows + i] = src[i * cols + j]`: a `rows x cols` matrix transposed (one image's
/// map between channels last, as the kernels work, and NCHW, as torch's block gives it).
fn transpose(src: &[f32], dst: &mut [f32], rows: usize, cols: usize) {
    for (i, row) in src.chunks_exact(cols).take(rows).enumerate() {
        for (j, &v) in row.iter().enumerate() {
            dst[j * rows + i] = v;
        }
    }
}

fn check_out(len: usize, sh: &BlockShape, name: &str) -> Result<()> {
    let (oh, ow) = (out_side(sh.h), out_side(sh.w));
    let want = checked_product(&[sh.n, sh.c, oh, ow], name)?;
    if len != want {
        return value_err(format!("{name}: expected {want} values, got {len}"));
    }
    Ok(())
}

/// Training forward: `out` (`N x C x ceil(H/2) x ceil(W/2)`) gets
/// `relu(batchnorm(conv_stride2(x)))`; returns the batch statistics (for the running
/// averages and the backward). `x` is `(N, cin, H, W)`, `weight` `(C, cin, 3, 3)`.
/// `parallel`: spread the images over the thread pool (false: the calling thread only, for
/// callers that run several of these at once).
pub fn forward(
    x: &[f32],
    sh: BlockShape,
    weight: &[f32],
    bias: &[f32],
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
    parallel: bool,
) -> Result<BatchStats> {
    let vectors = [(bias, "bias"), (gamma, "gamma"), (beta, "beta")];
    sh.check(x, weight, &vectors, eps)?;
    check_out(out.len(), &sh, "out")?;
    let (k, m) = (sh.k(), (sh.n * positions(&sh)) as f64);
    let (mu, cov) = moments(x, &sh, parallel);
    let mut stats = BatchStats {
        mean: Vec::with_capacity(sh.c),
        var: Vec::with_capacity(sh.c),
    };
    for (c, wc) in weight.chunks(k).enumerate() {
        let dot_mu: f64 = wc.iter().zip(&mu).map(|(&a, &b)| a as f64 * b as f64).sum();
        let mut v = 0.0;
        for a in 0..k {
            let row: f64 = (0..k).map(|b| cov[a * k + b] * wc[b] as f64).sum();
            v += wc[a] as f64 * row;
        }
        stats.mean.push((bias[c] as f64 + dot_mu) as f32);
        stats.var.push((v / m).max(0.0) as f32);
    }
    // y = a w . (p - mu) + beta, a = gamma / sqrt(var + eps), folded into the weights.
    let a: Vec<f32> = gamma
        .iter()
        .zip(&stats.var)
        .map(|(g, v)| g / (v + eps).sqrt())
        .collect();
    let wt = transposed(weight, &a, &sh);
    let per_out = sh.c * positions(&sh);
    let plane = sh.cin * sh.h * sh.w;
    let work = |img: &[f32], dst: &mut [f32], st: &mut (Vec<f32>, Vec<f32>)| {
        let mut rows = vec![0f32; per_out];
        forward_image(img, &mut rows, &sh, &wt, beta, &mu, st);
        transpose(&rows, dst, positions(&sh), sh.c);
    };
    pool::install_if(parallel && sh.n > 1, |par| {
        if par {
            x.par_chunks(plane)
                .zip(out.par_chunks_mut(per_out))
                .for_each_init(Default::default, |st, (img, o)| work(img, o, st));
        } else {
            let mut st = Default::default();
            for (img, o) in x.chunks(plane).zip(out.chunks_mut(per_out)) {
                work(img, o, &mut st);
            }
        }
    });
    Ok(stats)
}

/// One image of `forward`: `dst` (`P x C`, channels last) from the folded weights `wt`
/// (`K x C`), `beta` and the mean patch `mu`.
#[inline(always)]
fn forward_image_body<const FMA: bool>(
    img: &[f32],
    dst: &mut [f32],
    sh: &BlockShape,
    wt: &[f32],
    beta: &[f32],
    mu: &[f32],
    (pad, p): &mut (Vec<f32>, Vec<f32>),
) {
    let (cc, ow) = (sh.c, out_side(sh.w));
    padded(img, sh, pad);
    p.resize(sh.k(), 0.0);
    // 64 channels at a time in registers (`affine64`), the rest through `affine`.
    let wide = cc / 64 * 64;
    for (i, o) in dst.chunks_exact_mut(cc).enumerate() {
        centred_patch(pad, sh, 2 * (i / ow), 2 * (i % ow), mu, p);
        for c0 in (0..wide).step_by(64) {
            let acc = affine64::<FMA>(beta, wt, cc, c0, p);
            for (d, a) in o[c0..c0 + 64].chunks_exact_mut(8).zip(acc) {
                for (d, a) in d.iter_mut().zip(a) {
                    *d = a.max(0.0);
                }
            }
        }
        if wide < cc {
            let mut rest = vec![0f32; cc];
            affine::<FMA>(&mut rest, beta, wt, p);
            for (d, a) in o[wide..].iter_mut().zip(&rest[wide..]) {
                *d = a.max(0.0);
            }
        }
    }
}

dispatch_avx2!(forward_image => forward_image_body(
    img: &[f32],
    dst: &mut [f32],
    sh: &BlockShape,
    wt: &[f32],
    beta: &[f32],
    mu: &[f32],
    st: &mut (Vec<f32>, Vec<f32>),
) -> ());

/// One image of `backward`: `sum g (p - mu)` (`K x C`) and `sum g` (`C`, last), `g` the
/// output gradient where the output is positive (both `P x C`, channels last).
#[inline(always)]
fn backward_image_body<const FMA: bool>(
    img: &[f32],
    y: &[f32],
    dy: &[f32],
    sh: &BlockShape,
    mu: &[f32],
    (pad, pats): &mut (Vec<f32>, Vec<f32>),
) -> Vec<f64> {
    let (k, cc, ow) = (sh.k(), sh.c, out_side(sh.w));
    let np = positions(sh);
    padded(img, sh, pad);
    // Every position's centred patch, `P x K`.
    pats.resize(np * k, 0.0);
    for (i, p) in pats.chunks_exact_mut(k).enumerate() {
        centred_patch(pad, sh, 2 * (i / ow), 2 * (i % ow), mu, p);
    }
    let mut acc = vec![0f32; (k + 1) * cc];
    let lanes = if k == 9 { cc / 8 * 8 } else { 0 };
    for c8 in 0..lanes / 8 {
        // One-channel-input blocks (K = 9): eight channels' sums over the positions held
        // in registers.
        let (gp, sum_g) = sums9::<FMA>(pats, y, dy, cc, c8 * 8);
        for (t, row) in gp.iter().enumerate() {
            acc[t * cc + c8 * 8..t * cc + c8 * 8 + 8].copy_from_slice(row);
        }
        acc[k * cc + c8 * 8..k * cc + c8 * 8 + 8].copy_from_slice(&sum_g);
    }
    if lanes < cc {
        let mut g = vec![0f32; cc];
        for ((p, yr), dr) in pats
            .chunks_exact(k)
            .zip(y.chunks_exact(cc))
            .zip(dy.chunks_exact(cc))
        {
            for ((gv, &yv), &dv) in g.iter_mut().zip(yr).zip(dr).skip(lanes) {
                *gv = if yv > 0.0 { dv } else { 0.0 };
            }
            let (gp, sum_g) = acc.split_at_mut(k * cc);
            for (row, &pt) in gp.chunks_exact_mut(cc).zip(p) {
                for (r, &gv) in row.iter_mut().zip(&g).skip(lanes) {
                    *r = madd::<FMA>(gv, pt, *r);
                }
            }
            for (s, &gv) in sum_g.iter_mut().zip(&g).skip(lanes) {
                *s += gv;
            }
        }
    }
    // f32 sums over an image's positions (a few hundred terms), then f64.
    acc.iter().map(|&v| v as f64).collect()
}

/// Channels `c0..c0 + 8` of [`backward_image_body`] for 9-tap patches: `sum g p_t` per tap
/// and `sum g`.
#[inline(always)]
fn sums9<const FMA: bool>(
    pats: &[f32],
    y: &[f32],
    dy: &[f32],
    cc: usize,
    c0: usize,
) -> ([[f32; 8]; 9], [f32; 8]) {
    let mut gp = [[0f32; 8]; 9];
    let mut sum_g = [0f32; 8];
    for ((p, yr), dr) in pats
        .chunks_exact(9)
        .zip(y.chunks_exact(cc))
        .zip(dy.chunks_exact(cc))
    {
        let mut g = [0f32; 8];
        for ((gv, &yv), &dv) in g.iter_mut().zip(&yr[c0..c0 + 8]).zip(&dr[c0..c0 + 8]) {
            *gv = if yv > 0.0 { dv } else { 0.0 };
        }
        for (row, &pt) in gp.iter_mut().zip(p) {
            for (r, &gv) in row.iter_mut().zip(&g) {
                *r = madd::<FMA>(gv, pt, *r);
            }
        }
        for (s, &gv) in sum_g.iter_mut().zip(&g) {
            *s += gv;
        }
    }
    (gp, sum_g)
}

dispatch_avx2!(backward_image => backward_image_body(
    img: &[f32],
    y: &[f32],
    dy: &[f32],
    sh: &BlockShape,
    mu: &[f32],
    st: &mut (Vec<f32>, Vec<f32>),
) -> Vec<f64>);

/// Training backward: the parameters' gradients given `out` (the forward's output, whose
/// positive entries are the ReLU's mask), its gradient `dout` and the forward's `var`.
/// The bias gradient is zero: a bias before a BatchNorm has no effect.
pub fn backward(
    x: &[f32],
    sh: BlockShape,
    weight: &[f32],
    gamma: &[f32],
    var: &[f32],
    eps: f32,
    out: &[f32],
    dout: &[f32],
    parallel: bool,
) -> Result<BlockGrads> {
    sh.check(x, weight, &[(gamma, "gamma"), (var, "var")], eps)?;
    check_out(out.len(), &sh, "out")?;
    check_out(dout.len(), &sh, "dout")?;
    check_finite(out, "out")?;
    check_finite(dout, "dout")?;
    let (k, cc, m) = (sh.k(), sh.c, (sh.n * positions(&sh)) as f64);
    let (mu, cov) = moments(x, &sh, parallel);
    let per_out = cc * positions(&sh);
    let np = positions(&sh);
    let each = per_image_sums(x, &sh, parallel, |i, img, st| {
        let r = i * per_out..(i + 1) * per_out;
        let (mut y, mut dy) = (vec![0f32; per_out], vec![0f32; per_out]);
        transpose(&out[r.clone()], &mut y, cc, np);
        transpose(&dout[r], &mut dy, cc, np);
        backward_image(img, &y, &dy, &sh, &mu, st)
    });
    let mut sums = vec![0f64; cc * (k + 1)];
    for e in &each {
        for (a, b) in sums.iter_mut().zip(e) {
            *a += b;
        }
    }
    let mut grads = BlockGrads {
        weight: vec![0.0; cc * k],
        bias: vec![0.0; cc],
        gamma: vec![0.0; cc],
        beta: vec![0.0; cc],
    };
    for c in 0..cc {
        let invstd = 1.0 / (var[c] as f64 + eps as f64).sqrt();
        // xhat = wx . (p - mu), wx = invstd w_c.
        let wx: Vec<f64> = weight[c * k..(c + 1) * k]
            .iter()
            .map(|&w| w as f64 * invstd)
            .collect();
        let gp: Vec<f64> = (0..k).map(|t| sums[t * cc + c]).collect();
        let dgamma: f64 = wx.iter().zip(&gp).map(|(a, b)| a * b).sum();
        let a = gamma[c] as f64 * invstd;
        // dW = sum dz (p - mu) = a (sum g (p - mu) - dgamma / m sum xhat (p - mu)).
        for t in 0..k {
            let xhat_p: f64 = (0..k).map(|l| wx[l] * cov[l * k + t]).sum();
            grads.weight[c * k + t] = (a * (gp[t] - dgamma / m * xhat_p)) as f32;
        }
        grads.gamma[c] = dgamma as f32;
        grads.beta[c] = sums[k * cc + c] as f32;
    }
    Ok(grads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv_block::conv3x3_f64;
    use crate::test_util::{assert_numeric_gradients, lcg};

    /// The block computed plainly in f64 (conv stride 2, batch norm, ReLU), and
    /// `sum(out * g)`.
    fn reference(
        x: &[f32],
        sh: BlockShape,
        p: &[Vec<f32>; 4],
        eps: f32,
        g: &[f32],
    ) -> (Vec<f64>, f64) {
        let cc = sh.c;
        let (z, (oh, ow)) = conv3x3_f64(x, sh, &p[0], &p[1], 2);
        assert_eq!((oh, ow), (out_side(sh.h), out_side(sh.w)));
        let pp = oh * ow;
        let m = (sh.n * pp) as f64;
        let mut out = vec![0f64; z.len()];
        for (c, (&gamma, &beta)) in p[2].iter().zip(&p[3]).enumerate() {
            let idx = || (0..sh.n).flat_map(move |n| (0..pp).map(move |i| (n * cc + c) * pp + i));
            let mean = idx().map(|i| z[i]).sum::<f64>() / m;
            let var = idx().map(|i| (z[i] - mean).powi(2)).sum::<f64>() / m;
            for i in idx() {
                let y = gamma as f64 * (z[i] - mean) / (var + eps as f64).sqrt() + beta as f64;
                out[i] = y.max(0.0);
            }
        }
        let loss = out.iter().zip(g).map(|(o, &g)| o * g as f64).sum();
        (out, loss)
    }

    #[test]
    fn matches_a_plain_f64_reference_and_its_numeric_gradient() {
        for (sh, parallel) in [
            (
                BlockShape {
                    n: 3,
                    cin: 1,
                    h: 7,
                    w: 6,
                    c: 4,
                },
                true,
            ),
            (
                BlockShape {
                    n: 2,
                    cin: 2,
                    h: 5,
                    w: 9,
                    c: 3,
                },
                false,
            ),
            (
                BlockShape {
                    n: 4,
                    cin: 1,
                    h: 28,
                    w: 28,
                    c: 2,
                },
                true,
            ),
            (
                BlockShape {
                    n: 2,
                    cin: 1,
                    h: 5,
                    w: 4,
                    c: 72,
                },
                false,
            ),
        ] {
            let mut seed = 11u64;
            // A constant offset, as a white background gives.
            let x: Vec<f32> = (0..sh.n * sh.cin * sh.h * sh.w)
                .map(|_| 3.0 + lcg(&mut seed))
                .collect();
            let mut params = [
                (0..sh.c * sh.k())
                    .map(|_| lcg(&mut seed) * 0.5)
                    .collect::<Vec<f32>>(),
                (0..sh.c).map(|_| lcg(&mut seed)).collect(),
                (0..sh.c).map(|_| 1.0 + 0.3 * lcg(&mut seed)).collect(),
                (0..sh.c).map(|_| 0.3 * lcg(&mut seed)).collect(),
            ];
            let len = sh.n * sh.c * positions(&sh);
            let g: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
            let eps = 1e-5;
            let mut out = vec![0f32; len];
            let [w, b, ga, be] = &params;
            let stats = forward(&x, sh, w, b, ga, be, eps, &mut out, parallel).unwrap();
            let (want, _) = reference(&x, sh, &params, eps, &g);
            for (o, r) in out.iter().zip(&want) {
                assert!((*o as f64 - r).abs() < 1e-4, "{o} vs {r} ({sh:?})");
            }
            let grads = backward(&x, sh, w, ga, &stats.var, eps, &out, &g, parallel).unwrap();
            let analytic = [&grads.weight[..], &grads.bias, &grads.gamma, &grads.beta];
            let loss = |p: &[Vec<f32>; 4]| reference(&x, sh, p, eps, &g).1;
            assert_numeric_gradients(&mut params, analytic, loss, &format!("{sh:?}"));
        }
    }

    #[test]
    fn the_same_bits_in_parallel_and_on_one_thread() {
        let sh = BlockShape {
            n: 9,
            cin: 1,
            h: 28,
            w: 28,
            c: 8,
        };
        let mut seed = 5u64;
        let x: Vec<f32> = (0..sh.n * sh.h * sh.w).map(|_| lcg(&mut seed)).collect();
        let w: Vec<f32> = (0..sh.c * 9).map(|_| lcg(&mut seed)).collect();
        let v: Vec<f32> = (0..sh.c).map(|_| 1.0 + 0.1 * lcg(&mut seed)).collect();
        let len = sh.n * sh.c * positions(&sh);
        let g: Vec<f32> = (0..len).map(|_| lcg(&mut seed)).collect();
        let run = |parallel| {
            let mut out = vec![0f32; len];
            let st = forward(&x, sh, &w, &v, &v, &v, 1e-5, &mut out, parallel).unwrap();
            let gr = backward(&x, sh, &w, &v, &st.var, 1e-5, &out, &g, parallel).unwrap();
            (out, st, gr)
        };
        assert_eq!(run(true), run(false));
    }

    #[test]
    fn bad_shapes_are_errors() {
        let sh = BlockShape {
            n: 1,
            cin: 1,
            h: 3,
            w: 3,
            c: 2,
        };
        let (x, w, v) = (vec![0f32; 9], vec![0f32; 18], vec![1f32; 2]);
        let mut out = vec![0f32; 8];
        assert!(forward(&x, sh, &w, &v, &v, &v, 1e-5, &mut out, true).is_ok());
        assert!(forward(&x[..8], sh, &w, &v, &v, &v, 1e-5, &mut out, true).is_err());
        assert!(forward(&x, sh, &w[..17], &v, &v, &v, 1e-5, &mut out, true).is_err());
        assert!(forward(&x, sh, &w, &v[..1], &v, &v, 1e-5, &mut out, true).is_err());
        assert!(forward(&x, sh, &w, &v, &v, &v, f32::NAN, &mut out, true).is_err());
        assert!(forward(&x, sh, &w, &v, &v, &v, 1e-5, &mut out[..7], true).is_err());
        assert!(backward(&x, sh, &w, &v, &v, 1e-5, &out, &out[..7], true).is_err());
        assert!(backward(&x, sh, &w, &v, &v[..1], 1e-5, &out, &out, true).is_err());
        // A 1x1 image has a 1x1 output.
        let one = BlockShape { h: 1, w: 1, ..sh };
        assert!(forward(&x[..1], one, &w, &v, &v, &v, 1e-5, &mut out[..2], true).is_ok());
        let neg = [1.0, -0.5];
        let err = backward(&x, sh, &w, &v, &neg, 1e-5, &out, &out, true).unwrap_err();
        assert!(err.to_string().starts_with("var: must be >= 0"), "{err}");
        let nan = [f32::NAN; 8];
        let err = backward(&x, sh, &w, &v, &v, 1e-5, &nan, &out, true).unwrap_err();
        assert!(err.to_string().starts_with("out: holds"), "{err}");
    }
}
