//! The inputs a client sent last: numbered in order, the newest few repeated in every input
//! message so that a lost message costs nothing (the next one carries its inputs again).

use std::collections::VecDeque;

use easel_protocol::ClientMsg;
use easel_protocol::msg::MAX_INPUTS_PER_MESSAGE;

#[derive(Debug, Default)]
pub struct InputWindow {
    /// The newest input's number. Increases by one per input and never restarts, not even across
    /// reconnects (a resumed player keeps the server's count).
    seq: u32,
    /// Directions of the newest inputs (consecutive seqs ending at `seq`).
    recent: VecDeque<(i8, i8)>,
}

impl InputWindow {
    /// Numbers the next input, one tick of moving in `direction`, and returns the message that
    /// carries it and the inputs before it; `ack` is the newest snapshot tick decoded.
    pub fn push(&mut self, direction: (i8, i8), ack: u32) -> ClientMsg {
        self.seq += 1;
        if self.recent.len() == MAX_INPUTS_PER_MESSAGE {
            self.recent.pop_front();
        }
        self.recent.push_back(direction);
        ClientMsg::Input { seq: self.seq, ack, dirs: self.recent.iter().copied().collect() }
    }

    /// The newest input's number (0 before the first).
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// A new connection: numbers go on, but nothing sent on the old one is repeated (the server
    /// applied it or never will).
    pub fn new_connection(&mut self) {
        self.recent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_input_repeats_the_ones_before_it_up_to_the_message_limit() {
        let mut window = InputWindow::default();
        let directions = [(1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (-1, -1)];
        let mut last = None;
        for direction in directions {
            last = Some(window.push(direction, 7));
        }
        let expected = directions[directions.len() - MAX_INPUTS_PER_MESSAGE..].to_vec();
        assert_eq!(last, Some(ClientMsg::Input { seq: 6, ack: 7, dirs: expected }));
    }

    #[test]
    fn numbers_continue_across_connections_and_repeats_restart() {
        let mut window = InputWindow::default();
        window.push((1, 0), 0);
        window.push((1, 0), 0);
        window.new_connection();
        assert_eq!(window.push((0, 1), 3), ClientMsg::Input { seq: 3, ack: 3, dirs: vec![(0, 1)] });
    }
}
