//! An echo on Easel's WebSocket edge, for Autobahn|Testsuite (`cargo xtask autobahn`): the same
//! handshake checks, frame and message size limits, frame budget and closing handshake as
//! `/ws`, but every text or binary message comes straight back instead of going to a `Session`
//! (which speaks binary only and wants a `Hello` first). Built only with the `autobahn-echo`
//! feature; no server a host runs has it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::{Read, Socket};
use crate::net::AppState;
use crate::net::socket::SocketWriter;
use crate::room::Ending;

/// `GET /autobahn-echo`.
pub(in crate::net) async fn upgrade(State(state): State<AppState>, request: Request) -> Response {
    super::accept(state, request, echo).await
}

async fn echo(mut socket: Socket, _writer: Arc<SocketWriter>, state: AppState, _connection: u64) {
    let write_timeout = state.config.limits.write_timeout;
    loop {
        match Read::of(socket.next().await) {
            Read::Message(message @ (Message::Text(_) | Message::Binary(_))) => {
                if !matches!(tokio::time::timeout(write_timeout, socket.send(message)).await, Ok(Ok(()))) {
                    return;
                }
            }
            Read::Message(_) => {}
            Read::Ended(Ending::Closed) => return super::answer_close(&mut socket).await,
            Read::Ended(Ending::Dropped) => return,
            Read::Failed(reason) => return super::close(&mut socket, reason, write_timeout).await,
        }
    }
}
