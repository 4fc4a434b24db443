//! What the client knows of its room: players, orbs, scores and chat, as the server last said.

use std::collections::{BTreeMap, VecDeque};

use easel_protocol::game::Rules;
use easel_protocol::{OrbState, PlayerInfo, PlayerState, ServerMsg};

use super::Interpolator;

/// Chat lines kept for display.
const CHAT_HISTORY: usize = 100;

#[derive(Debug, Clone, PartialEq)]
pub struct PlayerView {
    pub info: PlayerInfo,
    /// `None` until the first snapshot that includes the player.
    pub state: Option<PlayerState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub from: u32,
    pub name: String,
    pub text: String,
}

#[derive(Debug, Default)]
pub struct GameView {
    me: Option<u32>,
    rules: Option<Rules>,
    /// The server's interest radius (0: it sends everyone).
    view_distance: f32,
    tick_rate: u16,
    players: BTreeMap<u32, PlayerView>,
    orbs: BTreeMap<u32, OrbState>,
    chat: VecDeque<ChatLine>,
    notices: VecDeque<String>,
    interpolator: Interpolator,
    tick: u32,
    /// Bumped on every chat line or notice, so a front redraws its log only when it changed.
    log_version: u64,
}

impl GameView {
    pub fn me(&self) -> Option<u32> {
        self.me
    }

    pub fn rules(&self) -> Rules {
        self.rules.unwrap_or(Rules::GAME)
    }

    /// Half the side of the square around the own player that the server sends (0: the whole
    /// world): the camera never shows beyond it, so nobody is missing from the screen.
    pub fn view_distance(&self) -> f32 {
        self.view_distance
    }

    pub fn tick_rate(&self) -> u16 {
        if self.tick_rate == 0 { 30 } else { self.tick_rate }
    }

    /// The newest simulation tick received.
    pub fn tick(&self) -> u32 {
        self.tick
    }

    pub fn players(&self) -> &BTreeMap<u32, PlayerView> {
        &self.players
    }

    pub fn orbs(&self) -> impl Iterator<Item = &OrbState> {
        self.orbs.values()
    }

    pub fn chat(&self) -> impl Iterator<Item = &ChatLine> {
        self.chat.iter()
    }

    /// Requests the server refused (e.g. chat too fast) and notices from the server (a restart
    /// coming), newest last.
    pub fn notices(&self) -> impl Iterator<Item = &String> {
        self.notices.iter()
    }

    pub fn log_version(&self) -> u64 {
        self.log_version
    }

    /// Players ordered for a scoreboard: highest score first, then by name.
    pub fn scoreboard(&self) -> Vec<(&PlayerInfo, u32)> {
        let mut rows: Vec<_> = self.players.values().map(|p| (&p.info, p.state.map_or(0, |s| s.score))).collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.name.cmp(&b.0.name)));
        rows
    }

    /// Where to draw each player at `now_ms`: interpolated between snapshots.
    pub fn render_positions(&self, now_ms: f64) -> Vec<(u32, f32, f32)> {
        self.interpolator.positions(now_ms)
    }

    pub(super) fn welcome(&mut self, msg: ServerMsg) {
        if let ServerMsg::Welcome { player_id, tick_rate, rules, view_distance, players, orbs, .. } = msg {
            self.me = Some(player_id);
            self.rules = Some(rules);
            self.view_distance = view_distance;
            self.tick_rate = tick_rate;
            self.players = players.into_iter().map(|info| (info.id, PlayerView { info, state: None })).collect();
            self.orbs = orbs.into_iter().map(|o| (o.id, o)).collect();
            self.interpolator = Interpolator::new(tick_rate).within_world(rules.world_width, rules.world_height);
        }
    }

    pub(super) fn interpolator(&self) -> &Interpolator {
        &self.interpolator
    }

    /// A decoded snapshot: every player's state after `tick`.
    pub(super) fn snapshot(&mut self, now_ms: f64, tick: u32, players: &[PlayerState]) {
        self.tick = tick;
        for state in players {
            if let Some(view) = self.players.get_mut(&state.id) {
                view.state = Some(*state);
            }
        }
        self.interpolator.push(now_ms, tick, players);
    }

    pub(super) fn apply(&mut self, msg: ServerMsg) {
        match msg {
            ServerMsg::PlayerJoined(info) => {
                self.players.insert(info.id, PlayerView { info, state: None });
            }
            ServerMsg::PlayerLeft { id } => {
                self.players.remove(&id);
            }
            ServerMsg::OrbCollected { orb, .. } => {
                self.orbs.insert(orb.id, orb);
            }
            ServerMsg::Chat { from, name, text } => {
                push_bounded(&mut self.chat, ChatLine { from, name, text });
                self.log_version += 1;
            }
            ServerMsg::Rejected { reason: text } | ServerMsg::Notice { text } => {
                push_bounded(&mut self.notices, text);
                self.log_version += 1;
            }
            // Handled by the core and the whiteboard.
            ServerMsg::Welcome { .. }
            | ServerMsg::Snapshot { .. }
            | ServerMsg::Pong { .. }
            | ServerMsg::BoardChunk { .. }
            | ServerMsg::BoardOp(_)
            | ServerMsg::BoardOps(_)
            | ServerMsg::BoardAck { .. }
            | ServerMsg::BoardRejected { .. }
            | ServerMsg::Presence { .. }
            | ServerMsg::InputWait { .. }
            | ServerMsg::Redirect { .. } => {}
        }
    }
}

fn push_bounded<T>(queue: &mut VecDeque<T>, item: T) {
    if queue.len() == CHAT_HISTORY {
        queue.pop_front();
    }
    queue.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_history_is_bounded() {
        let mut view = GameView::default();
        for i in 0..(CHAT_HISTORY as u32 + 10) {
            view.apply(ServerMsg::Chat { from: 1, name: "a".into(), text: i.to_string() });
        }
        assert_eq!(view.chat().count(), CHAT_HISTORY);
        assert_eq!(view.chat().next().unwrap().text, "10", "the oldest lines go first");
    }

    #[test]
    fn the_scoreboard_ranks_by_score() {
        let mut view = GameView::default();
        for (id, name) in [(1, "ann"), (2, "bob")] {
            view.apply(ServerMsg::PlayerJoined(PlayerInfo { id, name: name.into(), color: 0 }));
        }
        let players = vec![
            PlayerState { id: 1, x: 0.0, y: 0.0, score: 1, last_input_seq: 0 },
            PlayerState { id: 2, x: 0.0, y: 0.0, score: 4, last_input_seq: 0 },
        ];
        view.snapshot(0.0, 1, &players);
        let names: Vec<_> = view.scoreboard().iter().map(|(i, _)| i.name.clone()).collect();
        assert_eq!(names, ["bob", "ann"]);
    }

    #[test]
    fn leaving_players_disappear() {
        let mut view = GameView::default();
        view.apply(ServerMsg::PlayerJoined(PlayerInfo { id: 3, name: "c".into(), color: 0 }));
        view.apply(ServerMsg::PlayerLeft { id: 3 });
        assert!(view.players().is_empty());
    }
}
