//! Chat: lines reach everyone in the room and nobody outside it; floods are refused politely.

use std::time::Duration;

use easel_tests::{TestServer, WAIT};

#[tokio::test]
async fn chat_reaches_the_room_and_not_other_rooms() {
    let server = TestServer::start().await;
    let ann = server.join("ann", "red").await;
    let bob = server.join("bob", "red").await;
    let eve = server.join("eve", "blue").await;

    ann.chat("<b>hello</b> red room").unwrap();
    for client in [&ann, &bob] {
        let line = client
            .wait_for(WAIT, "ann's line", |core| core.view().chat().next().map(|l| (l.name.clone(), l.text.clone())))
            .await
            .unwrap();
        assert_eq!(line, ("ann".to_owned(), "<b>hello</b> red room".to_owned()), "text arrives verbatim, as text");
    }
    eve.chat("blue here").unwrap();
    eve.wait_for(WAIT, "eve's own line", |core| core.view().chat().next().map(|_| ())).await.unwrap();
    // Give a leak every chance to arrive before checking it did not.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bob.core().view().chat().count(), 1, "the blue room's chat never reaches the red room");
    assert_eq!(eve.core().view().chat().count(), 1, "the red room's chat never reaches the blue room");
    server.stop().await;
}

#[tokio::test]
async fn a_chat_flood_is_refused_without_dropping_the_connection() {
    let server = TestServer::start().await;
    let spammer = server.join("spam", "quiet").await;
    let reader = server.join("reader", "quiet").await;
    for i in 0..20 {
        spammer.chat(&format!("line {i}")).unwrap();
    }
    spammer.wait_for(WAIT, "a refusal", |core| core.view().notices().next().map(|_| ())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = reader.core().view().chat().count();
    assert!((1..=6).contains(&received), "only the allowed burst gets through, got {received}");
    assert!(
        matches!(spammer.core().status(), easel_client::Status::Joined),
        "a chat flood is refused line by line, the player stays"
    );
    server.stop().await;
}
