//! `berth exec`: runs a command in a container through the CRI `Exec` URL,
//! speaking the Kubernetes v5 channel protocol over WebSocket.

use berth_kubelet::engine::cri::Cri;
use cri_proto::v1 as cri;
use futures::{SinkExt, StreamExt};
use std::io::Write;
use std::process::ExitCode;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Restores the terminal's mode when dropped.
struct RawMode(Option<nix::sys::termios::Termios>);

impl RawMode {
    fn enter() -> RawMode {
        use nix::sys::termios;
        let stdin = std::io::stdin();
        match termios::tcgetattr(&stdin) {
            Ok(orig) => {
                let mut raw = orig.clone();
                termios::cfmakeraw(&mut raw);
                let _ = termios::tcsetattr(&stdin, termios::SetArg::TCSANOW, &raw);
                RawMode(Some(orig))
            }
            Err(_) => RawMode(None),
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(orig) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, orig);
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some((ws.ws_col, ws.ws_row))
}

pub async fn exec(mut cri: Cri, container_id: &str, cmd: Vec<String>, stdin: bool, tty: bool) -> anyhow::Result<ExitCode> {
    let tty = tty && nix::unistd::isatty(std::io::stdin()).unwrap_or(false);
    if !stdin && !tty {
        // Nothing to stream in: ExecSync works with every CRI runtime.
        let r = cri
            .runtime
            .exec_sync(cri::ExecSyncRequest { container_id: container_id.to_string(), cmd, timeout: 0 })
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?
            .into_inner();
        std::io::stdout().write_all(&r.stdout)?;
        std::io::stderr().write_all(&r.stderr)?;
        return Ok(ExitCode::from(r.exit_code.clamp(0, 255) as u8));
    }
    let url = cri
        .runtime
        .exec(cri::ExecRequest { container_id: container_id.to_string(), cmd, tty, stdin, stdout: true, stderr: !tty })
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .url;
    let mut req = url.replace("http://", "ws://").into_client_request()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", "v5.channel.k8s.io".parse()?);
    let (ws, _) = tokio_tungstenite::connect_async(req).await.map_err(|e| anyhow::anyhow!("connecting to the streaming server: {e}"))?;
    let (mut tx, mut rx) = ws.split();
    let _raw = tty.then(RawMode::enter);
    let (in_tx, mut in_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    if stdin {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 8192];
            let mut input = std::io::stdin().lock();
            loop {
                match input.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = in_tx.blocking_send(Vec::new());
                        return;
                    }
                    Ok(n) => {
                        if in_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())?;
    if tty {
        if let Some((w, h)) = terminal_size() {
            let msg = serde_json::json!({ "Width": w, "Height": h }).to_string();
            tx.send(Message::Binary([&[4u8][..], msg.as_bytes()].concat().into())).await?;
        }
    }
    let mut status = String::new();
    let mut stdin_open = stdin;
    loop {
        tokio::select! {
            m = rx.next() => match m {
                Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                    1 => { let mut o = std::io::stdout().lock(); o.write_all(&b[1..])?; o.flush()?; }
                    2 => { let mut o = std::io::stderr().lock(); o.write_all(&b[1..])?; o.flush()?; }
                    3 => status.push_str(&String::from_utf8_lossy(&b[1..])),
                    _ => {}
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
            d = in_rx.recv(), if stdin_open => match d {
                Some(d) if !d.is_empty() => tx.send(Message::Binary([&[0u8][..], &d].concat().into())).await?,
                _ => {
                    stdin_open = false;
                    // v5: close stdin.
                    tx.send(Message::Binary(vec![255u8, 0].into())).await?;
                }
            },
            _ = winch.recv(), if tty => {
                if let Some((w, h)) = terminal_size() {
                    let msg = serde_json::json!({ "Width": w, "Height": h }).to_string();
                    tx.send(Message::Binary([&[4u8][..], msg.as_bytes()].concat().into())).await?;
                }
            }
        }
    }
    drop(_raw);
    if status.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
    if v["status"] == "Success" {
        return Ok(ExitCode::SUCCESS);
    }
    let code = v["details"]["causes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["reason"] == "ExitCode"))
        .and_then(|c| c["message"].as_str())
        .and_then(|m| m.parse::<u8>().ok());
    match code {
        Some(c) => Ok(ExitCode::from(c)),
        None => {
            eprintln!("error: {}", v["message"].as_str().unwrap_or(&status));
            Ok(ExitCode::FAILURE)
        }
    }
}
