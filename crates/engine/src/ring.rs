//! Framed single-producer single-consumer rings between the audio thread and the worker.
//!
//! A frame is a fixed-length slice of `T` tagged with a `u64` frame index. Two `ringbuf` rings
//! carry it: the data ring gets the payload first, the tag ring gets the tag after it, so a
//! consumer that sees a tag always finds its whole payload already in the data ring (the tag
//! push happens after the data push and `ringbuf` publishes with release/acquire ordering).
//!
//! Pushing and popping never allocate, lock or wait; both rings are allocated in [`framed`].

use ringbuf::traits::{Consumer, Observer, Producer, Split};
use ringbuf::{HeapCons, HeapProd, HeapRb};

/// Producer half: pushes whole tagged frames or nothing.
pub struct FrameProducer<T> {
    /// Payload ring.
    data: HeapProd<T>,
    /// Tag ring, one tag per frame.
    tags: HeapProd<u64>,
    /// Number of `T` in one frame.
    frame_len: usize,
}

/// Consumer half: pops whole tagged frames.
pub struct FrameConsumer<T> {
    /// Payload ring.
    data: HeapCons<T>,
    /// Tag ring, one tag per frame.
    tags: HeapCons<u64>,
    /// Number of `T` in one frame.
    frame_len: usize,
}

/// Makes a ring for `capacity` frames of `frame_len` values each. Allocates both rings here.
pub fn framed<T: Copy>(frame_len: usize, capacity: usize) -> (FrameProducer<T>, FrameConsumer<T>) {
    let (dp, dc) = HeapRb::<T>::new(frame_len * capacity).split();
    let (tp, tc) = HeapRb::<u64>::new(capacity).split();
    (
        FrameProducer {
            data: dp,
            tags: tp,
            frame_len,
        },
        FrameConsumer {
            data: dc,
            tags: tc,
            frame_len,
        },
    )
}

impl<T: Copy> FrameProducer<T> {
    /// Number of `T` in one frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// True when one more frame fits.
    pub fn has_room(&self) -> bool {
        self.tags.vacant_len() >= 1 && self.data.vacant_len() >= self.frame_len
    }

    /// Pushes `frame` (exactly `frame_len` values) with `tag`; returns false and pushes nothing
    /// when the ring is full. Wait-free.
    pub fn try_push(&mut self, tag: u64, frame: &[T]) -> bool {
        debug_assert_eq!(frame.len(), self.frame_len);
        if !self.has_room() {
            return false;
        }
        let n = self.data.push_slice(frame);
        debug_assert_eq!(n, self.frame_len);
        self.tags.try_push(tag).is_ok()
    }

    /// True when the consumer half has been dropped (its thread is gone).
    pub fn is_abandoned(&self) -> bool {
        !self.tags.read_is_held()
    }
}

impl<T: Copy> FrameConsumer<T> {
    /// Number of `T` in one frame.
    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// Tag of the next frame, if one is complete.
    pub fn peek_tag(&self) -> Option<u64> {
        self.tags.try_peek().copied()
    }

    /// Pops the next frame into `out` (at least `frame_len` long) and returns its tag. Wait-free.
    pub fn try_pop(&mut self, out: &mut [T]) -> Option<u64> {
        let tag = self.tags.try_pop()?;
        let n = self.data.pop_slice(&mut out[..self.frame_len]);
        debug_assert_eq!(n, self.frame_len);
        Some(tag)
    }

    /// Drops the next frame without copying it and returns its tag. Wait-free.
    pub fn skip(&mut self) -> Option<u64> {
        let tag = self.tags.try_pop()?;
        let n = self.data.skip(self.frame_len);
        debug_assert_eq!(n, self.frame_len);
        Some(tag)
    }

    /// Number of complete frames waiting.
    pub fn len(&self) -> usize {
        self.tags.occupied_len()
    }

    /// True when no frame is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the producer half has been dropped (its thread is gone).
    pub fn is_abandoned(&self) -> bool {
        !self.tags.write_is_held()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_in_order_and_refuse_when_full() {
        let (mut p, mut c) = framed::<f32>(3, 2);
        assert!(p.try_push(7, &[1.0, 2.0, 3.0]));
        assert!(p.try_push(8, &[4.0, 5.0, 6.0]));
        assert!(!p.try_push(9, &[0.0; 3]), "a full ring must refuse a frame");
        let mut out = [0.0; 3];
        assert_eq!(c.peek_tag(), Some(7));
        assert_eq!(c.try_pop(&mut out), Some(7));
        assert_eq!(out, [1.0, 2.0, 3.0]);
        assert_eq!(c.skip(), Some(8));
        assert_eq!(c.try_pop(&mut out), None);
        assert!(c.is_empty());
    }

    #[test]
    fn abandonment_is_seen_from_both_sides() {
        let (p, c) = framed::<f32>(1, 1);
        drop(c);
        assert!(p.is_abandoned());
        let (p, c) = framed::<f32>(1, 1);
        drop(p);
        assert!(c.is_abandoned());
    }
}
