//! `contrast`: `(x - mean) * factor + mean` per channel (CIFAR-10-C).

#[inline(always)]
pub(super) fn contrast(plane: &mut [f32], factor: f32) {
    // Eight running sums in a fixed order: vectorises, and stays deterministic.
    let mut sums = [0f32; 8];
    let mut chunks = plane.chunks_exact(8);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c) {
            *s += v;
        }
    }
    let total = sums.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let mean = total / plane.len() as f32;
    for v in plane.iter_mut() {
        *v = (*v - mean) * factor + mean;
    }
}
