//! Fault injection seen from a real client.

mod common;

use std::time::Duration;

use common::{connect, mailbox, Deadline, PATIENCE};
use gardien_simulators::px2::command;
use gardien_simulators::{serve_tcp, Faults, Px2Config, Px2Device, TcpServer};
use tokio::time::{timeout, Instant};
use tokio_modbus::prelude::*;

/// Long enough to tell "no answer" from a local answer (which takes well under 1 ms).
const SILENCE: Duration = Duration::from_millis(300);

async fn start() -> (Px2Device, TcpServer) {
    let config = Px2Config {
        seed: Some(11),
        ..Px2Config::default()
    };
    let px2 = Px2Device::new(config, Faults::seeded(11));
    let server = serve_tcp(px2.clone(), "127.0.0.1:0").await.expect("serve");
    (px2, server)
}

#[tokio::test]
async fn dropped_request_times_out_the_client() {
    let (px2, server) = start().await;
    let mut ctx = connect(server.local_addr(), 1).await;
    px2.faults().set_drop_probability(1.0);
    let lost = timeout(SILENCE, ctx.read_holding_registers(0, 1)).await;
    assert!(lost.is_err(), "answered: {lost:?}");

    // A fresh connection works once the fault is lifted.
    px2.faults().clear();
    let mut ctx = connect(server.local_addr(), 1).await;
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap(),
        Ok(vec![0x5032])
    );
}

#[tokio::test]
async fn dropped_reply_still_applies_the_command() {
    let (px2, server) = start().await;
    let mut ctx = connect(server.local_addr(), 1).await;
    px2.faults().set_drop_reply_probability(1.0);
    let block = mailbox(1, command::ADD, "01", 1);
    let lost = timeout(SILENCE, ctx.write_multiple_registers(10, &block)).await;
    assert!(lost.is_err(), "answered: {lost:?}");
    px2.faults().clear();

    // The retry with the same sequence is not a second command.
    let mut ctx = connect(server.local_addr(), 1).await;
    ctx.write_multiple_registers(10, &block)
        .await
        .unwrap()
        .unwrap();
    let deadline = Deadline::after(PATIENCE);
    while ctx.read_holding_registers(20, 1).await.unwrap() != Ok(vec![1]) {
        deadline.tick().await;
    }
    assert_eq!(
        ctx.read_holding_registers(20, 3).await.unwrap(),
        Ok(vec![1, 0, 0])
    );
    assert_eq!(px2.snapshot().used, 1);
}

#[tokio::test]
async fn injected_exception() {
    let (px2, server) = start().await;
    let mut ctx = connect(server.local_addr(), 1).await;
    px2.faults()
        .set_exception(Some((ExceptionCode::ServerDeviceFailure, 1.0)));
    let read = ctx.read_holding_registers(0, 1).await.unwrap();
    assert_eq!(read, Err(ExceptionCode::ServerDeviceFailure));
    px2.faults().set_exception(None);
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap(),
        Ok(vec![0x5032])
    );
}

#[tokio::test]
async fn offline_closes_connections_until_back() {
    let (px2, server) = start().await;
    let mut ctx = connect(server.local_addr(), 1).await;
    px2.faults().go_offline(None);
    let closed = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert!(closed.expect("closed, not silent").is_err());

    // New connections are closed at once too.
    let mut ctx = connect(server.local_addr(), 1).await;
    let closed = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert!(closed.expect("closed, not silent").is_err());

    px2.faults().go_online();
    let mut ctx = connect(server.local_addr(), 1).await;
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap(),
        Ok(vec![0x5032])
    );
}

#[tokio::test]
async fn offline_for_a_duration_comes_back_by_itself() {
    let (px2, server) = start().await;
    px2.faults().go_offline(Some(Duration::from_millis(200)));
    let deadline = Deadline::after(PATIENCE);
    loop {
        let mut ctx = connect(server.local_addr(), 1).await;
        if let Ok(Ok(words)) = ctx.read_holding_registers(0, 1).await {
            assert_eq!(words, vec![0x5032]);
            break;
        }
        deadline.tick().await;
    }
    assert!(!px2.faults().is_offline());
}

#[tokio::test]
async fn closed_connection_and_latency() {
    let (px2, server) = start().await;
    let mut ctx = connect(server.local_addr(), 1).await;
    px2.faults().set_close_probability(1.0);
    let closed = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert!(closed.expect("closed, not silent").is_err());
    px2.faults().clear();

    px2.faults().set_latency(Duration::from_millis(150));
    let mut ctx = connect(server.local_addr(), 1).await;
    let started = Instant::now();
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap(),
        Ok(vec![0x5032])
    );
    assert!(started.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn other_unit_id_is_a_gateway_error() {
    let (_px2, server) = start().await;
    let mut ctx = connect(server.local_addr(), 2).await;
    let read = ctx.read_holding_registers(0, 1).await.unwrap();
    assert_eq!(read, Err(ExceptionCode::GatewayTargetDevice));
}

#[tokio::test]
async fn capacity_limit_makes_the_table_full() {
    let (px2, server) = start().await;
    px2.set_capacity_limit(Some(1));
    let mut ctx = connect(server.local_addr(), 1).await;
    assert_eq!(ctx.read_holding_registers(2, 1).await.unwrap(), Ok(vec![1]));
    for (sequence, uid, expected) in [(1, "01", 0), (2, "02", 1)] {
        ctx.write_multiple_registers(10, &mailbox(sequence, command::ADD, uid, 1))
            .await
            .unwrap()
            .unwrap();
        let deadline = Deadline::after(PATIENCE);
        let result = loop {
            let words = ctx.read_holding_registers(20, 2).await.unwrap().unwrap();
            if words[0] == sequence {
                break words[1];
            }
            deadline.tick().await;
        };
        assert_eq!(result, expected);
    }
}

#[tokio::test]
async fn stopped_server_refuses_connections() {
    let (_px2, server) = start().await;
    let addr = server.local_addr();
    server.stop().await;
    let refused = tokio_modbus::client::tcp::connect_slave(addr, Slave(1)).await;
    assert!(refused.is_err());
}
