//! Fixed-capacity buffers shared by the [server](crate::server) and [client](crate::client)
//! state machines: an input buffer that holds a message split across reads, and an output
//! queue drained by `poll_transmit`.

use crate::wire::{BufferTooSmall, Emit, Status};

/// Holds the prefix of one message until the rest arrives.
#[derive(Debug, Default)]
pub(crate) struct InBuffer<const N: usize> {
    buf: heapless::Vec<u8, N>,
}

/// What [`InBuffer::next`] found.
pub(crate) enum Next<T> {
    /// A whole message, and how many bytes of this call's input it used.
    Message(T, usize),
    /// The input (this many bytes of it) was buffered; more is needed.
    NeedMore(usize),
}

impl<const N: usize> InBuffer<N> {
    /// Frames the next message from the buffered prefix plus `input` with `parse`, which must
    /// return an owned value. Bytes past the message are not consumed. `overflow` is the error
    /// for a message that cannot fit in `N` bytes.
    pub(crate) fn next<T, E>(
        &mut self,
        input: &[u8],
        parse: impl FnOnce(&[u8]) -> Result<Status<(T, usize)>, E>,
        overflow: E,
    ) -> Result<Next<T>, E> {
        if self.buf.is_empty() {
            // Fast path: the whole message is usually in one read; parse it in place.
            return match parse(input)? {
                Status::Complete((msg, n)) => Ok(Next::Message(msg, n)),
                // Still partial after `N` bytes: the message cannot fit. Fail now, exactly as
                // the buffered path below does, so the outcome does not depend on how the
                // input was split.
                Status::Partial if input.len() >= N => Err(overflow),
                Status::Partial => match self.buf.extend_from_slice(input) {
                    Ok(()) => Ok(Next::NeedMore(input.len())),
                    Err(_) => Err(overflow),
                },
            };
        }
        let before = self.buf.len();
        let take = input.len().min(N - before);
        let _ = self
            .buf
            .extend_from_slice(input.get(..take).unwrap_or_default());
        match parse(&self.buf)? {
            Status::Complete((msg, n)) => {
                self.buf.clear();
                // The message began in earlier input, so it ends `n - before` bytes into this one.
                Ok(Next::Message(msg, n.saturating_sub(before)))
            }
            Status::Partial if self.buf.len() == N => Err(overflow),
            Status::Partial => Ok(Next::NeedMore(take)),
        }
    }
}

/// Bytes waiting to be sent.
#[derive(Debug, Default)]
pub(crate) struct OutBuffer<const N: usize> {
    buf: heapless::Vec<u8, N>,
}

impl<const N: usize> OutBuffer<N> {
    /// Appends a message. Capacities are chosen so that every queue the state machines build
    /// fits; a failure means a bug, reported rather than panicking.
    pub(crate) fn push(&mut self, msg: &impl Emit) -> Result<(), BufferTooSmall> {
        let start = self.buf.len();
        let required = start + msg.buffer_len();
        self.buf
            .resize(required, 0)
            .map_err(|_| BufferTooSmall { required })?;
        let dst = self.buf.get_mut(start..).unwrap_or_default();
        msg.emit(dst).map(|_| ())
    }

    /// Copies queued bytes into `out` and removes them from the queue.
    pub(crate) fn drain_into(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.buf.len());
        if let (Some(dst), Some(src)) = (out.get_mut(..n), self.buf.get(..n)) {
            dst.copy_from_slice(src);
        }
        self.discard(n);
        n
    }

    /// Removes the first `n` queued bytes (all of them if fewer are queued).
    pub(crate) fn discard(&mut self, n: usize) {
        let len = self.buf.len();
        let n = n.min(len);
        self.buf.copy_within(n..len, 0);
        self.buf.truncate(len - n);
    }

    /// The queued bytes.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.buf
    }
}
