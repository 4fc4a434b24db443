//! A member's queue of reliable messages, from its room to its connection task: bounded, in
//! order, and holding no memory until a message waits in it. Most of the time the room writes a
//! member's messages straight to its socket (`handoff::send_messages`), so the queue of an idle
//! or keeping-up connection stays empty; a tokio channel allocates its first block of 32 slots
//! when it is made, 1.5 KB for every connection whether it ever queues or not (decision 0051).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use tokio::sync::Notify;

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue holds its capacity: the connection is not keeping up.
    Full,
    /// The connection is gone.
    Closed,
}

struct Queue {
    messages: VecDeque<Bytes>,
    senders: usize,
    receiving: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the receiver after a message was queued or the last sender left.
    ready: Notify,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A queue holding at most `capacity` messages, and its two ends.
pub(crate) fn message_queue(capacity: usize) -> (MessageSender, MessageReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Queue { messages: VecDeque::new(), senders: 1, receiving: true }),
        ready: Notify::new(),
        capacity,
    });
    (MessageSender { shared: Arc::clone(&shared) }, MessageReceiver { shared })
}

/// The room's end (cloned for the hand-over thread's reports).
pub struct MessageSender {
    shared: Arc<Shared>,
}

impl MessageSender {
    /// Queues `message` unless the queue is full or its receiver gone.
    pub(crate) fn try_send(&self, message: Bytes) -> Result<(), Refused> {
        self.try_send_all(std::slice::from_ref(&message))
    }

    /// Queues `messages` in order, under one lock and with one wake: all of them, or as many as
    /// fit before the queue is full (`Full`), or none if its receiver is gone.
    pub(crate) fn try_send_all(&self, messages: &[Bytes]) -> Result<(), Refused> {
        let mut queue = self.shared.lock();
        if !queue.receiving {
            return Err(Refused::Closed);
        }
        let room = self.shared.capacity.saturating_sub(queue.messages.len());
        queue.messages.extend(messages.iter().take(room).cloned());
        drop(queue);
        if room > 0 && !messages.is_empty() {
            self.shared.ready.notify_one();
        }
        if messages.len() > room { Err(Refused::Full) } else { Ok(()) }
    }

    /// Room left in the queue.
    pub(crate) fn capacity(&self) -> usize {
        self.shared.capacity.saturating_sub(self.shared.lock().messages.len())
    }
}

impl Clone for MessageSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl Drop for MessageSender {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.senders -= 1;
        if queue.senders == 0 {
            drop(queue);
            self.shared.ready.notify_one();
        }
    }
}

/// The connection's end.
pub struct MessageReceiver {
    shared: Arc<Shared>,
}

impl MessageReceiver {
    /// The next message; `None` once the queue is empty and every sender gone. Cancel-safe: a
    /// message is taken only by the poll that returns it.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        loop {
            {
                let mut queue = self.shared.lock();
                if let Some(message) = queue.messages.pop_front() {
                    return Some(message);
                }
                if queue.senders == 0 {
                    return None;
                }
            }
            // A message queued since the look above left a permit: this returns at once.
            self.shared.ready.notified().await;
        }
    }

    /// The next message if one waits.
    pub(crate) fn try_recv(&mut self) -> Option<Bytes> {
        self.shared.lock().messages.pop_front()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.shared.lock().messages.is_empty()
    }

    /// Messages waiting.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shared.lock().messages.len()
    }
}

impl Drop for MessageReceiver {
    fn drop(&mut self) {
        let mut queue = self.shared.lock();
        queue.receiving = false;
        // Nobody will take them: free them now rather than with the last sender.
        queue.messages = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn messages_come_out_in_order_and_the_capacity_holds() {
        let (sender, mut receiver) = message_queue(2);
        assert_eq!(sender.capacity(), 2);
        sender.try_send(Bytes::from_static(b"a")).unwrap();
        sender.try_send(Bytes::from_static(b"b")).unwrap();
        assert_eq!(sender.capacity(), 0);
        assert_eq!(sender.try_send(Bytes::from_static(b"c")), Err(Refused::Full));
        assert_eq!(receiver.recv().await.as_deref(), Some(&b"a"[..]));
        assert_eq!(receiver.try_recv().as_deref(), Some(&b"b"[..]));
        assert!(receiver.is_empty());
        assert_eq!(receiver.try_recv(), None);
    }

    #[test]
    fn a_batch_goes_in_as_far_as_the_queue_has_room() {
        let (sender, mut receiver) = message_queue(3);
        let batch: Vec<_> = [b"a", b"b", b"c", b"d"].iter().map(|m| Bytes::from_static(*m)).collect();
        assert_eq!(sender.try_send_all(&batch), Err(Refused::Full));
        let queued: Vec<_> = std::iter::from_fn(|| receiver.try_recv()).collect();
        assert_eq!(queued, batch[..3]);
        assert_eq!(sender.try_send_all(&batch[..2]), Ok(()));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_message_sent_from_another_thread() {
        let (sender, mut receiver) = message_queue(4);
        let sent = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            sender.try_send(Bytes::from_static(b"late")).unwrap();
            sender
        });
        let got = tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await.unwrap();
        assert_eq!(got.as_deref(), Some(&b"late"[..]));
        drop(sent.join().unwrap());
    }

    #[tokio::test]
    async fn the_receiver_ends_when_every_sender_is_gone_and_the_queue_is_empty() {
        let (sender, mut receiver) = message_queue(4);
        let second = sender.clone();
        sender.try_send(Bytes::from_static(b"last")).unwrap();
        drop(sender);
        drop(second);
        assert_eq!(receiver.recv().await.as_deref(), Some(&b"last"[..]));
        let end = tokio::time::timeout(Duration::from_secs(5), receiver.recv()).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn a_message_taken_by_no_poll_stays_queued_when_the_wait_is_dropped() {
        let (sender, mut receiver) = message_queue(4);
        // A select that picks another branch drops the wait.
        tokio::select! {
            biased;
            () = std::future::ready(()) => {}
            _ = receiver.recv() => unreachable!("nothing was queued"),
        }
        sender.try_send(Bytes::from_static(b"kept")).unwrap();
        assert_eq!(receiver.recv().await.as_deref(), Some(&b"kept"[..]));
    }

    #[test]
    fn sending_to_a_gone_connection_is_refused() {
        let (sender, receiver) = message_queue(4);
        drop(receiver);
        assert_eq!(sender.try_send(Bytes::from_static(b"x")), Err(Refused::Closed));
    }
}
