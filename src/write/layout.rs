//! Where multipart part boundaries fall.
//!
//! Parts start at `part_size` and double every 1,000 parts, so 10,000 parts
//! reach S3's 5 TiB object limit while small and medium files keep small,
//! evenly sized parts. The layout is a pure function of the offset: the
//! streaming uploader (which does not know the final size) and the staged
//! uploader agree on it.

use std::ops::Range;

use crate::s3::MAX_PARTS;

/// Smallest part S3 (and B2, at 5 MB) accepts, except the last.
pub const MIN_PART: u64 = 5 * 1024 * 1024;
const PARTS_PER_STEP: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartLayout {
    base: u64,
}

impl PartLayout {
    pub fn new(part_size: u64) -> Self {
        PartLayout {
            base: part_size.max(MIN_PART),
        }
    }

    /// The first part's size: files up to this size are one PutObject.
    pub fn first_part(&self) -> u64 {
        self.base
    }

    /// Byte range of part `index` (0-based; S3's part number is index + 1).
    pub fn part(&self, index: u64) -> Range<u64> {
        let step = index / PARTS_PER_STEP;
        let within = index % PARTS_PER_STEP;
        let size = self.base << step;
        let step_start = self.base * PARTS_PER_STEP * ((1u64 << step) - 1);
        let start = step_start + within * size;
        start..start + size
    }

    /// The parts of an object of `size` bytes, the last one cut at `size`.
    /// `None` if it would need more than 10,000 parts.
    pub fn parts(&self, size: u64) -> Option<Vec<Range<u64>>> {
        let mut out = Vec::new();
        let mut index = 0;
        loop {
            let mut range = self.part(index);
            if range.start >= size && index > 0 {
                return Some(out);
            }
            range.end = range.end.min(size);
            out.push(range);
            index += 1;
            if index > MAX_PARTS as u64 {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_grow_to_reach_five_tebibytes() {
        let l = PartLayout::new(8 * MIB);
        assert_eq!(l.part(0), 0..8 * MIB);
        assert_eq!(l.part(999).end, 8000 * MIB);
        assert_eq!(l.part(1000), 8000 * MIB..8016 * MIB);
        assert_eq!(
            l.parts(20 * MIB).unwrap(),
            vec![0..8 * MIB, 8 * MIB..16 * MIB, 16 * MIB..20 * MIB]
        );
        assert_eq!(l.parts(0).unwrap(), vec![0..0]);
        let five_tib = 5 * 1024 * 1024 * MIB;
        assert!(l.parts(five_tib).unwrap().len() <= MAX_PARTS as usize);
        let small = PartLayout::new(5 * MIB);
        assert!(small.parts(five_tib - MIB * 1024 * 200).is_some());
        // Consecutive parts tile the file.
        for i in 0..3000 {
            assert_eq!(l.part(i).end, l.part(i + 1).start);
        }
    }
}
