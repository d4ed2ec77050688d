//! The `gardien-sim` binary, driven as a script would: JSON lines out, commands in.

mod common;

use std::net::SocketAddr;
use std::process::Stdio;

use common::{connect, PATIENCE};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};
use tokio::time::timeout;
use tokio_modbus::prelude::*;

async fn next_json(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = timeout(PATIENCE, lines.next_line())
        .await
        .expect("gardien-sim answers in time")
        .expect("read stdout")
        .expect("a line");
    serde_json::from_str(&line).expect("JSON line")
}

#[tokio::test]
async fn demo_file_starts_and_obeys_commands() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gardien-sim"))
        .arg(demo)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gardien-sim");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let mut endpoints = Vec::new();
    for _ in 0..5 {
        endpoints.push(next_json(&mut lines).await);
    }
    let hall = endpoints
        .iter()
        .find(|e| e["name"] == "hall")
        .expect("hall");
    assert_eq!(hall["kind"], "px2");
    let cellar = endpoints
        .iter()
        .find(|e| e["name"] == "cellar")
        .expect("cellar");
    assert!(cellar["rtu"].as_str().unwrap().starts_with("/dev/"));
    let addr: SocketAddr = hall["tcp"].as_str().unwrap().parse().unwrap();

    let mut ctx = connect(addr, 1).await;
    assert_eq!(ctx.read_holding_registers(3, 1).await.unwrap(), Ok(vec![2]));

    let mut send = async |command: &str| {
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        next_json(&mut lines).await
    };
    let answer = send("present hall 04A22B91 2").await;
    assert_eq!(answer["result"], "granted");
    assert_eq!(ctx.read_input_registers(0, 1).await.unwrap(), Ok(vec![1]));
    assert_eq!(
        send("present hall 04A22B91 3").await["result"],
        "denied_door"
    );
    assert_eq!(send("present nowhere 01 1").await["ok"], false);

    assert_eq!(send("offline hall").await["ok"], true);
    let closed = timeout(PATIENCE, ctx.read_holding_registers(0, 1)).await;
    assert!(closed.expect("closed, not silent").is_err());
    assert_eq!(send("online hall").await["ok"], true);
    assert_eq!(send("reboot hall").await["ok"], true);
    let mut ctx = connect(addr, 1).await;
    assert_eq!(
        ctx.read_holding_registers(3, 4).await.unwrap(),
        Ok(vec![0, 0, 0, 0])
    );

    assert_eq!(send("latency hall 5").await["ok"], true);
    assert_eq!(send("drop hall 0.5").await["ok"], true);
    assert_eq!(send("quit").await["ok"], true);
    let status = timeout(PATIENCE, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn meters_file_serves_gateways_and_writes_the_ground_truth() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/meters.toml");
    // The ground truth path is relative: run where writing it does no harm.
    let dir = std::env::temp_dir().join(format!("gardien-sim-meters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gardien-sim"))
        .arg(file)
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gardien-sim");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut endpoints = Vec::new();
    for _ in 0..3 {
        endpoints.push(next_json(&mut lines).await);
    }
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("mbg-ground-truth.json")).unwrap())
            .unwrap();
    assert_eq!(truth["scenarios"].as_array().unwrap().len(), 10);
    let b = endpoints
        .iter()
        .find(|e| e["name"] == "building-b")
        .unwrap();
    assert_eq!(b["kind"], "mbg250");
    let addr: SocketAddr = b["tcp"].as_str().unwrap().parse().unwrap();
    let mut ctx = connect(addr, 1).await;
    assert_eq!(
        ctx.read_holding_registers(0, 4).await.unwrap(),
        Ok(vec![0x4D47, 0x0104, 250, 5])
    );

    let mut send = async |command: &str| {
        stdin
            .write_all(format!("{command}\n").as_bytes())
            .await
            .unwrap();
        next_json(&mut lines).await
    };
    let before = send("time").await["result"]["unix"].as_i64().unwrap();
    let after = send("advance 28800").await["result"]["unix"]
        .as_i64()
        .unwrap();
    assert!(after >= before + 28_800);
    assert_eq!(send("no-answer 20000001 on").await["ok"], true);
    assert_eq!(send("status building-b").await["result"]["configured"], 5);
    assert_eq!(send("quit").await["ok"], true);
    let status = timeout(PATIENCE, child.wait()).await.unwrap().unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(&dir).unwrap();
}
