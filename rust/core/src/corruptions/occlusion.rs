//! `occlusion`: ink-coloured squares at random places, as MNIST-C's ink occluders. The same
//! code sets floats or bytes (the byte path needs no float round trip).

use super::rng::ItemRng;

/// `patches` squares of side `side` set to `ink` at random places, the same in every plane.
pub(super) fn occlude<T: Copy>(
    img: &mut [T],
    [h, w]: [usize; 2],
    side: usize,
    patches: usize,
    ink: T,
    mut rng: ItemRng,
) {
    for _ in 0..patches {
        let y0 = rng.below(h - side + 1);
        let x0 = rng.below(w - side + 1);
        for p in img.chunks_mut(h * w) {
            for row in p.chunks_mut(w).skip(y0).take(side) {
                row[x0..x0 + side].fill(ink);
            }
        }
    }
}
