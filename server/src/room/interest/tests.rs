//! Interest management and the budget, in memory: who is in a view, hysteresis, priorities,
//! starvation, and the bytes a member is sent.

use easel_protocol::ServerMsg;
use easel_protocol::snapshot::quantize;

use super::*;

fn player(id: u32, x: f32, y: f32) -> NetPlayer {
    NetPlayer { id, x: quantize(x), y: quantize(y), score: 0, last_input_seq: 0 }
}

fn ids(players: &[NetPlayer]) -> Vec<u32> {
    players.iter().map(|p| p.id).collect()
}

const VIEW: Interest = Interest { view_distance: 1000.0, snapshot_budget: 0 };

#[test]
fn a_player_enters_a_cells_view_within_the_view_distance_and_leaves_beyond_the_hysteresis() {
    // Member 1 stands in cell (0, 0), world x and y in [0, 500): its view reaches x < 1,500.
    let world = |x3: f32| {
        Arc::new(vec![
            player(1, 100.0, 100.0),
            player(2, 1000.0, 1000.0),
            player(3, x3, 100.0),
            player(4, 5000.0, 5000.0),
        ])
    };
    let mut views = CellViews::new();
    let mut step = |tick, x3, expected: &[u32], why: &str| {
        let frame = Frame::new(tick, world(x3), &VIEW, 30, std::mem::take(&mut views));
        assert_eq!(ids(&frame.visible_to(1)), expected, "{why}");
        views = frame.into_views();
    };
    step(1, 1550.0, &[1, 2], "3 is 1,050 from the cell: not in view");
    step(2, 1490.0, &[1, 2, 3], "3 came within 1,000 of the cell");
    step(3, 1590.0, &[1, 2, 3], "3 is in the hysteresis band and was in view: it stays");
    step(4, 1610.0, &[1, 2], "beyond the band it leaves");
    step(5, 1590.0, &[1, 2], "and in the band it does not come back");
    let frame = Frame::new(6, world(1590.0), &VIEW, 30, CellViews::new());
    assert_eq!(ids(&frame.visible_to(4)), [4], "a player alone far away sees itself");
}

#[test]
fn members_of_one_cell_share_one_set_and_those_who_see_everyone_share_the_worlds() {
    let players = Arc::new(vec![player(1, 10.0, 10.0), player(2, 200.0, 200.0), player(3, 1900.0, 1900.0)]);
    let frame = Frame::new(1, Arc::clone(&players), &VIEW, 30, CellViews::new());
    let (one, two, three) = (frame.visible_to(1), frame.visible_to(2), frame.visible_to(3));
    assert!(Arc::ptr_eq(&one, &two), "1 and 2 stand in the same cell");
    assert_eq!(ids(&one), [1, 2]);
    assert_eq!(ids(&three), [3]);
    let near = Arc::new(vec![player(1, 10.0, 10.0), player(2, 900.0, 900.0)]);
    for interest in [VIEW, Interest::FULL_VISIBILITY] {
        let frame = Frame::new(1, Arc::clone(&near), &interest, 30, CellViews::new());
        assert!(Arc::ptr_eq(&frame.visible_to(1), &near));
        assert!(Arc::ptr_eq(&frame.visible_to(2), &near));
    }
}

#[test]
fn a_view_holds_everyone_within_the_view_distance_and_nobody_beyond_a_cell_and_the_band() {
    let mut rng = easel_protocol::rng::Mulberry32::new(5);
    let players: Vec<NetPlayer> =
        (0..800).map(|id| player(id, (rng.next_f64() * 6000.0) as f32, (rng.next_f64() * 6000.0) as f32)).collect();
    let frame = Frame::new(1, Arc::new(players.clone()), &VIEW, 30, CellViews::new());
    for me in 0..800 {
        let own = players[me as usize];
        let seen = ids(&frame.visible_to(me));
        for p in &players {
            let d = chebyshev(p, &own);
            if d <= wire_distance(1000.0) {
                assert!(seen.contains(&p.id), "{} is {d} from {me} and must be seen", p.id);
            }
            if d > wire_distance(1500.0 + VIEW_HYSTERESIS) {
                assert!(!seen.contains(&p.id), "{} is {d} from {me} and must not be sent", p.id);
            }
        }
    }
}

/// 300 players around a member, all moving every tick, and a budget far below what that
/// costs: the member acknowledges every snapshot, as a client keeping up does.
#[test]
fn under_a_tight_budget_own_player_is_always_fresh_the_nearest_first_and_nobody_starves() {
    let interest = Interest { view_distance: 0.0, snapshot_budget: 12_000 };
    let tick_rate = 30;
    let mut view = MemberView::default();
    let mut views = CellViews::new();
    let mut delivered = 0;
    let mut last_fresh = vec![0u32; 300];
    let mut fresh_count = vec![0u32; 300];
    let mut longest_stale = 0;
    let mut total_bytes = 0;
    let mut client: Option<Vec<NetPlayer>> = None;
    let ticks = 150;
    for tick in 1..=ticks {
        // Player i sits i×5 units from the member (id 0) and drifts one unit a tick.
        let world: Vec<NetPlayer> = (0..300u32)
            .map(|i| NetPlayer { last_input_seq: tick, ..player(i, 100.0 + i as f32 * 5.0, 100.0 + tick as f32) })
            .collect();
        let frame = Frame::new(tick, Arc::new(world.clone()), &interest, tick_rate, std::mem::take(&mut views));
        let sent = view.next(0, delivered, &frame, &mut Encodings::default());
        views = frame.into_views();
        let Some(bytes) = sent else { continue };
        total_bytes += bytes.len();
        let ServerMsg::Snapshot { baseline, entities, .. } = easel_protocol::decode_server(&bytes).unwrap() else {
            panic!("not a snapshot")
        };
        let base = (baseline != 0).then(|| client.clone().expect("a baseline the client has"));
        let decoded = snapshot::decode(&entities, base.as_deref(), tick - baseline).unwrap();
        assert_eq!(decoded.first(), Some(&world[0]), "own player is always sent fresh");
        for p in &decoded {
            if *p == world[p.id as usize] {
                last_fresh[p.id as usize] = tick;
                fresh_count[p.id as usize] += 1;
            }
        }
        if tick > 30 {
            longest_stale = longest_stale.max(last_fresh.iter().map(|&t| tick - t).max().unwrap());
        }
        client = Some(decoded);
        delivered = tick;
    }
    let per_second = total_bytes as f64 / (f64::from(ticks) / f64::from(tick_rate));
    assert!(per_second <= 12_000.0 * 1.1, "{per_second:.0} bytes/s against a budget of 12,000");
    assert!(fresh_count.iter().all(|&c| c > 0), "every player was sent at least once");
    assert!(longest_stale < 60, "no player went two seconds without an update: {longest_stale} ticks");
    let near: u32 = fresh_count[1..30].iter().sum();
    let far: u32 = fresh_count[270..299].iter().sum();
    assert!(near > far * 2, "the nearest are updated more often: {near} vs {far}");
}

/// A member alone with 10 players when 290 more arrive at once and stand still: they reach
/// it over several ticks, within its budget, and then nothing more is needed.
#[test]
fn a_crowd_arriving_in_a_stopped_world_is_caught_up_to_within_the_budget() {
    let interest = Interest { view_distance: 0.0, snapshot_budget: 6_000 };
    let world: Vec<NetPlayer> = (0..300u32).map(|i| player(i, i as f32 * 3.0, 50.0)).collect();
    let mut view = MemberView::default();
    let mut views = CellViews::new();
    let mut client: Option<Vec<NetPlayer>> = None;
    let (mut delivered, mut bytes_after_the_crowd) = (0, 0);
    for tick in 1..=100 {
        let present = if tick == 1 { &world[..10] } else { &world[..] };
        let frame = Frame::new(tick, Arc::new(present.to_vec()), &interest, 30, std::mem::take(&mut views));
        let sent = view.next(0, delivered, &frame, &mut Encodings::default());
        views = frame.into_views();
        if let Some(bytes) = sent {
            let ServerMsg::Snapshot { baseline, entities, .. } = easel_protocol::decode_server(&bytes).unwrap() else {
                panic!("not a snapshot")
            };
            let base = (baseline != 0).then(|| client.clone().unwrap());
            client = Some(snapshot::decode(&entities, base.as_deref(), tick - baseline).unwrap());
            delivered = tick;
            if tick > 1 {
                bytes_after_the_crowd += bytes.len();
            }
        }
        if tick == 2 {
            assert!(views.values().any(CellView::behind), "290 new players do not fit one tick of 200 bytes");
        }
        if !views.values().any(CellView::behind) && !view.owed() && client.as_deref() == Some(&world[..]) {
            let budget_so_far = 6_000.0 * f64::from(tick) / 30.0;
            assert!(
                bytes_after_the_crowd as f64 <= budget_so_far,
                "{bytes_after_the_crowd} bytes in {tick} ticks against a budget of {budget_so_far:.0}"
            );
            return;
        }
    }
    panic!("a member of an unchanging world never caught up");
}
