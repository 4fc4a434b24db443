//! A UDP relay on 127.0.0.1 between one QUIC client and the server that loses and holds back
//! datagrams, each way, by a seeded draw: a lossy network made of real packets, for one client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use easel_protocol::rng::Mulberry32;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What happens to the datagrams of one direction.
#[derive(Debug, Clone, Copy)]
pub struct Impairment {
    /// The share of datagrams dropped.
    pub loss: f64,
    /// The share of datagrams delivered `hold` late (after those sent behind them).
    pub hold_share: f64,
    pub hold: Duration,
    /// Datagrams passed untouched at the start, so that the handshake is not what gets tested.
    pub spared: u64,
}

/// Counts of one direction.
#[derive(Debug, Default)]
pub struct Counts {
    pub forwarded: AtomicU64,
    pub dropped: AtomicU64,
    pub held: AtomicU64,
}

/// A running relay: clients send to `address`, the server sees the relay's own socket.
pub struct UdpRelay {
    pub address: SocketAddr,
    pub to_server: Arc<Counts>,
    pub to_client: Arc<Counts>,
    task: JoinHandle<()>,
}

impl UdpRelay {
    /// Relays to `server`, impairing both directions alike.
    pub async fn start(server: SocketAddr, impairment: Impairment) -> UdpRelay {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind the relay's front"));
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind the relay's back"));
        back.connect(server).await.expect("aim the relay at the server");
        let address = front.local_addr().expect("the relay's address");
        let (to_server, to_client) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let task = tokio::spawn(relay(front, back, impairment, to_server.clone(), to_client.clone()));
        UdpRelay { address, to_server, to_client, task }
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a datagram goes.
#[derive(Clone)]
enum Toward {
    Server(Arc<UdpSocket>),
    Client(Arc<UdpSocket>, SocketAddr),
}

impl Toward {
    async fn send(&self, datagram: &[u8]) {
        // A full socket buffer is one more loss; the relay goes on.
        let _ = match self {
            Toward::Server(back) => back.send(datagram).await,
            Toward::Client(front, client) => front.send_to(datagram, client).await,
        };
    }
}

/// One direction's fate draws.
struct Fate {
    impairment: Impairment,
    rng: Mulberry32,
    seen: u64,
    counts: Arc<Counts>,
}

impl Fate {
    async fn pass(&mut self, datagram: &[u8], toward: Toward) {
        self.seen += 1;
        let draw = self.rng.next_f64();
        let spared = self.seen <= self.impairment.spared;
        if !spared && draw < self.impairment.loss {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        } else if !spared && draw < self.impairment.loss + self.impairment.hold_share {
            self.counts.held.fetch_add(1, Ordering::Relaxed);
            let (datagram, hold) = (datagram.to_vec(), self.impairment.hold);
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                toward.send(&datagram).await;
            });
        } else {
            self.counts.forwarded.fetch_add(1, Ordering::Relaxed);
            toward.send(datagram).await;
        }
    }
}

async fn relay(
    front: Arc<UdpSocket>,
    back: Arc<UdpSocket>,
    impairment: Impairment,
    to_server: Arc<Counts>,
    to_client: Arc<Counts>,
) {
    let mut up = Fate { impairment, rng: Mulberry32::new(0x5E1A_0001), seen: 0, counts: to_server };
    let mut down = Fate { impairment, rng: Mulberry32::new(0x5E1A_0002), seen: 0, counts: to_client };
    let mut client = None;
    let (mut from_client, mut from_server) = (vec![0u8; 65_536], vec![0u8; 65_536]);
    loop {
        tokio::select! {
            received = front.recv_from(&mut from_client) => {
                let Ok((length, sender)) = received else { continue };
                client = Some(sender);
                up.pass(&from_client[..length], Toward::Server(back.clone())).await;
            }
            received = back.recv(&mut from_server) => {
                let (Ok(length), Some(client)) = (received, client) else { continue };
                down.pass(&from_server[..length], Toward::Client(front.clone(), client)).await;
            }
        }
    }
}
