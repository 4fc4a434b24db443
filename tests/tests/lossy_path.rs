//! WebTransport over a lossy path made of real packets: a UDP relay on 127.0.0.1 drops some of a
//! client's datagrams and delivers others a second late. Snapshots ride datagrams, so a lost or
//! late one costs only itself: the ones behind it arrive on time, and a remote player keeps
//! moving as smoothly as interpolation allows.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use easel::sim::MAX_STEPS_PER_TICK;
use easel_client::core::ClientCore;
use easel_client::headless::{Link, Received, Transport, TransportChoice};
use easel_protocol::codec::snapshot_tick;
use easel_protocol::game::Rules;
use easel_tests::relay::{Impairment, UdpRelay};
use easel_tests::{TestServer, WAIT};
use tokio::time::Instant;

const ROOM: &str = "lossy";
const TICK_MS: f64 = 1000.0 / 30.0;
const FRAME_MS: f64 = 1000.0 / 60.0;
/// How long a held datagram is late: thirty ticks, far more than anything else here takes.
const HOLD: Duration = Duration::from_secs(1);
/// How long the watcher watches, and how long it waits before measuring (interpolation needs a
/// few snapshots first).
const RUN: Duration = Duration::from_secs(10);
const SETTLED_MS: f64 = 2000.0;

#[tokio::test]
async fn over_a_lossy_udp_path_no_snapshot_waits_for_a_lost_one_and_motion_stays_smooth() {
    let server = TestServer::start_with_webtransport().await;
    let Transport::WebTransport { url, certificate_hashes } = server.transport(TransportChoice::WebTransport).await
    else {
        panic!("the server offers WebTransport");
    };
    let impairment = Impairment { loss: 0.05, hold_share: 0.05, hold: HOLD, spared: 40 };
    let relay = UdpRelay::start(server.addr, impairment).await;
    let port = format!(":{}/", server.addr.port());
    assert!(url.contains(&port), "the UDP port has the HTTP port's number: {url}");
    let relayed =
        Transport::WebTransport { url: url.replace(&port, &format!(":{}/", relay.address.port())), certificate_hashes };

    let mover = server.join("mover", ROOM).await;
    let mover_id = mover.core().view().me().expect("joined");
    let mut link = Link::open(&relayed, ROOM).await.expect("WebTransport through the relay");
    let mut watcher = ClientCore::new("watcher", ROOM);
    watcher.expect_lost_snapshots();
    link.send(&watcher.hello(), easel_client::core::Channel::Reliable).await.expect("send Hello");

    let start = Instant::now();
    let now_ms = || start.elapsed().as_secs_f64() * 1000.0;
    let square = [(1, 0), (0, 1), (-1, 0), (0, -1)];
    let mut frames = tokio::time::interval(Duration::from_secs_f64(FRAME_MS / 1000.0));
    let end = tokio::time::sleep(RUN);
    tokio::pin!(end);
    // Snapshot arrivals (ms), and how many arrived after a newer one: late, and not waited for.
    let (mut arrivals, mut newest, mut overtaken) = (Vec::new(), 0u32, 0u32);
    let mut drawn: Option<(f64, f32, f32)> = None;
    // The mover's largest step between two frames, as a share of what its top speed covers in
    // the time between them.
    let mut worst_speed_share = 0f64;
    loop {
        tokio::select! {
            () = &mut end => break,
            received = link.recv() => match received {
                Received::Message { bytes, .. } => {
                    let now = now_ms();
                    if let Some(tick) = snapshot_tick(&bytes) {
                        if now > SETTLED_MS {
                            arrivals.push(now);
                        }
                        if tick < newest {
                            overtaken += 1;
                        }
                        newest = newest.max(tick);
                    }
                    watcher.handle_message(now, &bytes).expect("a well-formed message");
                }
                other => panic!("the watcher lost its connection: {other:?}"),
            },
            _ = frames.tick() => {
                let now = now_ms();
                let (dx, dy) = square[(now / 1000.0) as usize % 4];
                mover.hold_direction(dx, dy);
                for transmit in watcher.poll_transmit(now) {
                    link.send(&transmit.bytes, transmit.channel).await.expect("the watcher sends");
                }
                let Some(&(_, x, y)) = watcher.render_positions(now).iter().find(|(id, ..)| *id == mover_id) else {
                    continue;
                };
                if let Some((then, px, py)) = drawn.filter(|_| now > SETTLED_MS) {
                    // The server applies at most MAX_STEPS_PER_TICK inputs a tick (inputs bunched
                    // by a busy machine), so interpolated motion may reach that many steps a tick.
                    let top_speed = f64::from(Rules::GAME.player_speed) / 1000.0 * MAX_STEPS_PER_TICK as f64;
                    let covered = f64::from((x - px).hypot(y - py));
                    worst_speed_share = worst_speed_share.max(covered / (top_speed * (now - then).max(FRAME_MS)));
                }
                drawn = Some((now, x, y));
            }
        }
    }
    mover.hold_direction(0, 0);

    let (dropped, held) = (relay.to_client.dropped.load(Relaxed), relay.to_client.held.load(Relaxed));
    assert!(dropped > 5 && held > 5, "the path lost {dropped} and held back {held} datagrams toward the client");
    assert!(overtaken > 0, "no late snapshot was overtaken by a newer one");
    let longest_gap = arrivals.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(
        longest_gap < HOLD.as_secs_f64() * 1000.0 / 2.0,
        "{longest_gap:.0} ms without a snapshot: one waited for a held datagram"
    );
    let expected = (RUN.as_secs_f64() * 1000.0 - SETTLED_MS) / TICK_MS;
    assert!(arrivals.len() as f64 > 0.75 * expected, "{} snapshots of about {expected:.0} arrived", arrivals.len());
    assert!(drawn.is_some(), "the watcher drew the mover");
    assert!(worst_speed_share <= 1.0, "the mover jumped: {:.1}× its top speed", worst_speed_share);
    assert!(tokio::time::timeout(WAIT, link.close()).await.is_ok(), "the watcher's connection closes in time");
    server.stop().await;
}
