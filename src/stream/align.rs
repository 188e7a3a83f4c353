//! [`Aligner`]: where several inputs meet, a checkpoint barrier is passed on
//! only once every running input has delivered it, and nothing an input
//! sends after its barrier is applied before that (aligned checkpoints, as
//! in Flink). An input that delivered the barrier is held: its later
//! messages wait in its queue, in order, until the others catch up. An
//! input that ends counts as having delivered every barrier.
//!
//! Rows, watermarks and FLUSH barriers of unheld inputs pass straight
//! through; the caller still takes the minimum watermark itself.

use std::collections::VecDeque;

use super::{Barrier, BarrierKind, Message};

/// What the caller handles next.
#[derive(Debug)]
pub enum Aligned {
    /// A message of `input`, in that input's order.
    Message(usize, Message),
    /// An input has ended.
    Ended,
    /// Every running input has delivered this checkpoint barrier: snapshot,
    /// then pass it on.
    Barrier(Barrier),
}

pub struct Aligner {
    queues: Vec<VecDeque<Option<Message>>>,
    held: Vec<bool>,
    ended: Vec<bool>,
    /// Where the round-robin over inputs resumes.
    next: usize,
    barrier: Option<Barrier>,
}

impl Aligner {
    pub fn new(inputs: usize) -> Self {
        Aligner {
            queues: vec![VecDeque::new(); inputs],
            held: vec![false; inputs],
            ended: vec![false; inputs],
            next: 0,
            barrier: None,
        }
    }

    /// Takes a message from `input` (`None`: the input ended).
    pub fn push(&mut self, input: usize, message: Option<Message>) {
        self.queues[input].push_back(message);
    }

    /// Whether every input has ended.
    pub fn all_ended(&self) -> bool {
        self.ended.iter().all(|e| *e)
    }

    pub fn is_ended(&self, input: usize) -> bool {
        self.ended[input]
    }

    /// The next thing to handle, or `None` until more input is pushed.
    pub fn pop(&mut self) -> Option<Aligned> {
        let n = self.queues.len();
        let mut k = 0;
        while k < n {
            let i = (self.next + k) % n;
            k += 1;
            if self.held[i] {
                continue;
            }
            let Some(message) = self.queues[i].pop_front() else {
                continue;
            };
            self.next = (i + 1) % n;
            match message {
                None => {
                    self.ended[i] = true;
                    if let Some(b) = self.complete() {
                        // The end comes after the barrier it completed.
                        self.queues[i].push_front(None);
                        self.ended[i] = false;
                        return Some(Aligned::Barrier(b));
                    }
                    return Some(Aligned::Ended);
                }
                Some(Message::Barrier(b)) if b.kind == BarrierKind::Checkpoint => {
                    self.held[i] = true;
                    self.barrier = Some(match self.barrier {
                        Some(old) if old.epoch >= b.epoch => old,
                        _ => b,
                    });
                    if let Some(b) = self.complete() {
                        return Some(Aligned::Barrier(b));
                    }
                    // Held: look at the other inputs.
                    k = 0;
                }
                Some(m) => return Some(Aligned::Message(i, m)),
            }
        }
        None
    }

    /// The barrier, if every input is now held or ended (at least one held).
    fn complete(&mut self) -> Option<Barrier> {
        let barrier = self.barrier?;
        let done = (0..self.queues.len()).all(|i| self.held[i] || self.ended[i]);
        if !done {
            return None;
        }
        self.barrier = None;
        self.held.iter_mut().for_each(|h| *h = false);
        Some(barrier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(epoch: u64) -> Option<Message> {
        Some(Message::Barrier(Barrier {
            epoch,
            kind: BarrierKind::Checkpoint,
        }))
    }

    fn drain(a: &mut Aligner) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(x) = a.pop() {
            out.push(match x {
                Aligned::Message(i, Message::Watermark(w)) => format!("{i}:{w}"),
                Aligned::Message(i, _) => format!("{i}:?"),
                Aligned::Ended => "end".to_string(),
                Aligned::Barrier(b) => format!("cp{}", b.epoch),
            });
        }
        out
    }

    #[test]
    fn an_input_past_its_barrier_waits_for_the_others() {
        let mut a = Aligner::new(2);
        a.push(0, Some(Message::Watermark(1)));
        a.push(0, cp(1));
        a.push(0, Some(Message::Watermark(2)));
        a.push(1, Some(Message::Watermark(10)));
        assert_eq!(drain(&mut a), vec!["0:1", "1:10"]);
        a.push(1, cp(1));
        a.push(1, Some(Message::Watermark(11)));
        assert_eq!(drain(&mut a), vec!["cp1", "0:2", "1:11"]);
    }

    #[test]
    fn an_ended_input_counts_as_aligned() {
        let mut a = Aligner::new(2);
        a.push(0, cp(3));
        a.push(0, Some(Message::Watermark(5)));
        assert!(drain(&mut a).is_empty());
        a.push(1, Some(Message::Watermark(1)));
        a.push(1, None);
        assert_eq!(drain(&mut a), vec!["1:1", "cp3", "0:5", "end"]);
        assert!(!a.all_ended());
        a.push(0, None);
        assert_eq!(drain(&mut a), vec!["end"]);
        assert!(a.all_ended());
    }
}
