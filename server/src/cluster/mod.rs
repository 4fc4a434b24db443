//! Cluster mode: several nodes share one PostgreSQL database, which holds the boards (`store`)
//! and the room directory: `nodes` (who is alive, on the database's clock) and `rooms` (which
//! node holds each room, under which epoch, until when).
//!
//! - Placement: a join for a room no node holds claims it, in one statement, for the live node
//!   with the fewest rooms; concurrent first joins through different nodes end with one owner.
//! - Leases: every `RENEW_EVERY` each node renews the rooms it has open, on the database's
//!   clock (`LEASE` from now). A lease that lapses is claimed anew at the next join, through any
//!   node: nothing has to sweep, since a room nobody joins needs no owner.
//! - Fencing: board commits check `(owner, epoch)` in their own transaction (`store::Fence`); a
//!   renewal that comes back without a room, or no renewal for a whole lease, closes the room
//!   here with 1012, and its players reconnect to where they came in.
//! - Redirects: a node that does not hold the room answers `Hello` with the owner's URL and a
//!   seat (`seat`); the owner keeps the player's socket (no proxying).

pub mod seat;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

use crate::room::Rooms;
use crate::store::Fence;
use seat::Seats;

/// The shortest cluster secret accepted.
pub const MIN_SECRET_CHARS: usize = 16;
/// How long a lease lasts after its last renewal, on the database's clock.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often a node renews its leases and says it is alive.
pub const RENEW_EVERY: Duration = Duration::from_secs(1);
/// The longest a query to the database may take before it counts as failed.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// The least time between two reads of the live nodes prompted by an origin nobody knew.
const PEERS_REFRESH: Duration = Duration::from_millis(250);

/// Why the cluster could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("the cluster's database did not answer within {0:?}")]
    Timeout(Duration),
    #[error("no node of the cluster can take a room now")]
    NoNode,
}

/// Where a room is to be played.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Here, under this lease.
    Here(Fence),
    /// On another node: send the player there with this seat.
    Elsewhere { url: String, seat: Vec<u8> },
}

/// One node's view of the cluster, for the host's console.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub id: i64,
    pub url: String,
    pub alive: bool,
    pub draining: bool,
    pub rooms: i64,
    pub players: i32,
    /// Whether this is the node answering.
    pub this: bool,
}

/// This node's membership of the cluster.
pub struct Cluster {
    node: i64,
    /// How long a lease lasts after its last renewal (`LEASE`; shorter in tests).
    lease: Duration,
    public_url: String,
    seats: Arc<Seats>,
    database: Database,
    /// When the last renewal that went through was sent: past a whole lease without one, this
    /// node can no longer be sure it holds any room.
    last_renewed: Mutex<Instant>,
    /// The public URLs of the live nodes, as of the last renewal: their pages may connect here
    /// (a player redirected from one node to another keeps the first node's page).
    peers: std::sync::RwLock<Vec<String>>,
    /// When an unknown origin last made the node read the live nodes again.
    peers_asked: Mutex<Option<Instant>>,
}

/// Claims `$1` for the live, undraining node with the fewest rooms when no lease on it is
/// current, in one statement (concurrent claims of one room queue on its row); returns the
/// owner, epoch and the owner's URL when it claimed.
const CLAIM: &str = "
    WITH candidate AS (
        SELECT n.id FROM nodes n
        WHERE n.seen_until > now() AND NOT n.draining
        ORDER BY (SELECT count(*) FROM rooms r WHERE r.owner = n.id AND r.lease_until > now()), n.players, n.id
        LIMIT 1
    )
    INSERT INTO rooms AS r (name, owner, epoch, lease_until)
    SELECT $1, candidate.id, 1, now() + make_interval(secs => $2) FROM candidate
    ON CONFLICT (name) DO UPDATE
        SET owner = excluded.owner, epoch = r.epoch + 1, lease_until = excluded.lease_until
        WHERE r.lease_until <= now()
    RETURNING r.owner, r.epoch, (SELECT url FROM nodes WHERE id = r.owner)";

/// The current holder of `$1`, when its lease is current.
const HOLDER: &str = "
    SELECT r.owner, r.epoch, n.url FROM rooms r JOIN nodes n ON n.id = r.owner
    WHERE r.name = $1 AND r.lease_until > now()";

/// Renews this node's (`$1`) leases on the rooms `$2` at epochs `$3`; returns those it still
/// holds.
const RENEW: &str = "
    UPDATE rooms r SET lease_until = now() + make_interval(secs => $4)
    FROM unnest($2::text[], $3::bigint[]) AS held(name, epoch)
    WHERE r.name = held.name AND r.epoch = held.epoch AND r.owner = $1
    RETURNING r.name";

/// The public URLs of the live nodes.
const LIVE_NODES: &str = "SELECT url FROM nodes WHERE seen_until > now()";

/// Says node `$1` is alive, how many players it has and whether it drains.
const HEARTBEAT: &str = "
    UPDATE nodes SET seen_until = now() + make_interval(secs => $2), players = $3, draining = $4
    WHERE id = $1";

impl Cluster {
    /// Connects to the database at `url`, creates the tables if needed and registers this node,
    /// reached by players at `public_url`, with the cluster's `secret`.
    pub async fn join(url: &str, public_url: &str, secret: &str) -> Result<Arc<Self>, ClusterError> {
        Self::join_with_lease(url, public_url, secret, LEASE).await
    }

    /// `join`, with leases of `lease` (a model test's seconds are few).
    pub async fn join_with_lease(
        url: &str,
        public_url: &str,
        secret: &str,
        lease: Duration,
    ) -> Result<Arc<Self>, ClusterError> {
        let database = Database::new(url)?;
        let client = database.client().await?;
        let schema = format!("BEGIN; {} COMMIT;", crate::store::POSTGRES_SCHEMA);
        timed(client.batch_execute(&schema)).await?;
        let row = timed(client.query_one(
            "INSERT INTO nodes (url, seen_until) VALUES ($1, now() + make_interval(secs => $2)) RETURNING id",
            &[&public_url, &lease.as_secs_f64()],
        ))
        .await?;
        let node: i64 = row.get(0);
        tracing::info!(node, url = public_url, "joined the cluster");
        Ok(Arc::new(Self {
            node,
            lease,
            public_url: public_url.to_owned(),
            seats: Arc::new(Seats::new(secret)),
            database,
            last_renewed: Mutex::new(Instant::now()),
            peers: std::sync::RwLock::new(vec![public_url.to_owned()]),
            peers_asked: Mutex::new(None),
        }))
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> i64 {
        self.node
    }

    /// Where room `room` is to be played: here, or on the node holding it (claimed for the
    /// least loaded node if nobody does). A genuine, unused `seat` for this node places it here
    /// without asking the database.
    pub async fn place(&self, room: &str, seat: Option<&[u8]>) -> Result<Placement, ClusterError> {
        if let Some(bytes) = seat {
            match self.seats.take(bytes, room, self.node, seat::unix_ms()) {
                Ok(seat) => return Ok(Placement::Here(Fence { node: self.node, epoch: seat.epoch })),
                Err(e) => tracing::info!(room, "seat not trusted ({e}): asking the database"),
            }
        }
        let (owner, epoch, url) = self.holder(room).await?;
        if owner == self.node {
            return Ok(Placement::Here(Fence { node: owner, epoch }));
        }
        Ok(Placement::Elsewhere { url, seat: issue(&self.seats, room, owner, epoch) })
    }

    /// The node holding `room` (claimed for the least loaded one if none does), its epoch and
    /// URL.
    async fn holder(&self, room: &str) -> Result<(i64, i64, String), ClusterError> {
        let client = self.database.client().await?;
        let claimed = timed(client.query_opt(CLAIM, &[&room, &self.lease.as_secs_f64()])).await?;
        let holder = match claimed {
            Some(row) => row,
            None => timed(client.query_opt(HOLDER, &[&room])).await?.ok_or(ClusterError::NoNode)?,
        };
        Ok((holder.get(0), holder.get(1), holder.get(2)))
    }

    /// Renews this node's leases and says it is alive, every `RENEW_EVERY`, until the server
    /// stops; closes the rooms whose lease was lost (with 1012: their players reconnect).
    pub async fn keep_leases(self: Arc<Self>, rooms: Arc<Rooms>) {
        let mut every = tokio::time::interval(RENEW_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let sent = Instant::now();
            let held = rooms.leases();
            match self.renew(&held, rooms.player_count(), rooms.is_draining()).await {
                Ok((kept, peers)) => {
                    *self.peers.write().unwrap_or_else(|p| p.into_inner()) = peers;
                    *self.last_renewed.lock().unwrap_or_else(|p| p.into_inner()) = sent;
                    for (room, fence) in held.iter().filter(|(room, _)| !kept.contains(room)) {
                        tracing::warn!(room, epoch = fence.epoch, "lost the room's lease: closing it here");
                        rooms.lost(room, *fence, "this room moved to another server");
                    }
                }
                Err(e) => {
                    let since = self.last_renewed.lock().unwrap_or_else(|p| p.into_inner()).elapsed();
                    tracing::warn!("cannot renew leases for {since:?}: {e}");
                    if since >= self.lease {
                        for (room, fence) in &held {
                            rooms.lost(room, *fence, "this server lost touch with the cluster");
                        }
                    }
                }
            }
        }
    }

    /// Renews the leases on `held` and says this node is alive (with `players`, draining or
    /// not); returns the rooms still held and the live nodes' URLs.
    pub async fn renew(
        &self,
        held: &[(String, Fence)],
        players: usize,
        draining: bool,
    ) -> Result<(Vec<String>, Vec<String>), ClusterError> {
        let client = self.database.client().await?;
        let lease = self.lease.as_secs_f64();
        let players = i32::try_from(players).unwrap_or(i32::MAX);
        let names: Vec<&str> = held.iter().map(|(name, _)| name.as_str()).collect();
        let epochs: Vec<i64> = held.iter().map(|(_, fence)| fence.epoch).collect();
        let heartbeat_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&self.node, &lease, &players, &draining];
        let renewal_params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [&self.node, &names, &epochs, &lease];
        let heartbeat = client.execute(HEARTBEAT, &heartbeat_params);
        let renewal = client.query(RENEW, &renewal_params);
        let peers = client.query(LIVE_NODES, &[]);
        // One round trip: the client pipelines all three.
        let (heartbeat, renewal, peers) =
            timed(async { Ok::<_, tokio_postgres::Error>(tokio::join!(heartbeat, renewal, peers)) }).await?;
        heartbeat?;
        let kept = renewal?.into_iter().map(|row| row.get(0)).collect();
        Ok((kept, peers?.into_iter().map(|row| row.get(0)).collect()))
    }

    /// Whether a renewal went through within the last lease: while not, this node can place no
    /// room and may be holding none (`/readyz` says it is not ready).
    pub fn in_touch(&self) -> bool {
        self.last_renewed.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < self.lease
    }

    /// The public URLs of the cluster's live nodes (this one's among them).
    pub fn peers(&self) -> Vec<String> {
        self.peers.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The live nodes' URLs, read from the database again when `origin` is none of those known
    /// (a node that joined since the last renewal, whose page a redirect sent here), at most
    /// every `PEERS_REFRESH` so that made-up origins cannot make the node flood the database.
    pub async fn peers_for(&self, origin: Option<&str>) -> Vec<String> {
        let known = self.peers();
        let Some(origin) = origin else { return known };
        if known.iter().any(|peer| peer.eq_ignore_ascii_case(origin)) {
            return known;
        }
        {
            let mut asked = self.peers_asked.lock().unwrap_or_else(|p| p.into_inner());
            if asked.is_some_and(|at| at.elapsed() < PEERS_REFRESH) {
                return known;
            }
            *asked = Some(Instant::now());
        }
        let live = async {
            let client = self.database.client().await?;
            let rows = timed(client.query(LIVE_NODES, &[])).await?;
            Ok::<_, ClusterError>(rows.into_iter().map(|row| row.get(0)).collect::<Vec<String>>())
        };
        match live.await {
            Ok(urls) => {
                *self.peers.write().unwrap_or_else(|p| p.into_inner()) = urls.clone();
                urls
            }
            Err(_) => known,
        }
    }

    /// The start of a drain: this node takes no new rooms, and every room it holds is handed
    /// to another node, its players sent there (rooms no other node can take stay here).
    pub async fn hand_off(&self, rooms: &Rooms) {
        let client = match self.database.client().await {
            Ok(client) => client,
            Err(e) => return tracing::warn!("cannot hand rooms off: {e}"),
        };
        let lease = self.lease.as_secs_f64();
        if let Err(e) = timed(client.execute(HEARTBEAT, &[&self.node, &lease, &0_i32, &true])).await {
            return tracing::warn!("cannot hand rooms off: {e}");
        }
        for (room, fence) in rooms.leases() {
            let released = timed(client.execute(
                "UPDATE rooms SET lease_until = now() WHERE name = $1 AND owner = $2 AND epoch = $3",
                &[&room, &fence.node, &fence.epoch],
            ))
            .await;
            if let Err(e) = released {
                tracing::warn!(room, "cannot hand the room off: {e}");
                continue;
            }
            match self.holder(&room).await {
                Ok((owner, epoch, url)) if owner != self.node => {
                    tracing::info!(room, url, "handing the room off");
                    let (seats, name) = (self.seats.clone(), room.clone());
                    rooms.hand_off(&room, fence, url, Box::new(move || issue(&seats, &name, owner, epoch)));
                }
                Ok(_) | Err(ClusterError::NoNode) => {
                    tracing::warn!(room, "no other node can take the room: it stays until the drain ends");
                }
                Err(e) => tracing::warn!(room, "cannot hand the room off: {e}"),
            }
        }
    }

    /// Every node the database knows of, live ones first.
    pub async fn nodes(&self) -> Result<Vec<NodeStatus>, ClusterError> {
        let client = self.database.client().await?;
        let rows = timed(client.query(
            "SELECT n.id, n.url, n.seen_until > now(), n.draining, n.players,
                    (SELECT count(*) FROM rooms r WHERE r.owner = n.id AND r.lease_until > now())
             FROM nodes n WHERE n.seen_until > now() - interval '1 hour'
             ORDER BY n.seen_until > now() DESC, n.id",
            &[],
        ))
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| NodeStatus {
                id: row.get(0),
                url: row.get(1),
                alive: row.get(2),
                draining: row.get(3),
                players: row.get(4),
                rooms: row.get(5),
                this: row.get::<_, i64>(0) == self.node,
            })
            .collect())
    }

    /// This node's URL, as redirects give it.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }
}

/// A seat for `room` on node `owner` at `epoch`, from now.
fn issue(seats: &Seats, room: &str, owner: i64, epoch: i64) -> Vec<u8> {
    // A nonce only has to differ between seats; a failing random source was caught at start.
    let nonce = crate::secret::token().unwrap_or_default();
    seats.issue(room, owner, epoch, seat::unix_ms(), nonce)
}

/// One connection to the database, made again when it broke.
struct Database {
    config: tokio_postgres::Config,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Database {
    fn new(url: &str) -> Result<Self, ClusterError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(QUERY_TIMEOUT);
        Ok(Self { config, client: tokio::sync::Mutex::new(None) })
    }

    /// The connection, made (once, for every caller waiting) if there is none or it broke.
    async fn client(&self) -> Result<Arc<Client>, ClusterError> {
        let mut client = self.client.lock().await;
        if let Some(client) = client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(client.clone());
        }
        let (made, connection) = timed(self.config.connect(NoTls)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!("connection to the cluster's database ended: {e}");
            }
        });
        let made = Arc::new(made);
        *client = Some(made.clone());
        Ok(made)
    }
}

/// `work`, failed as a time-out when the database takes longer than `QUERY_TIMEOUT`.
async fn timed<T>(work: impl Future<Output = Result<T, tokio_postgres::Error>>) -> Result<T, ClusterError> {
    match tokio::time::timeout(QUERY_TIMEOUT, work).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(ClusterError::Timeout(QUERY_TIMEOUT)),
    }
}
