//! Inputs found by the fuzz targets in core/fuzz, kept as regression tests.

use socksgate_core::Authentication;
use socksgate_core::server::{Config, Event, Server, ServerError};

/// Feeds `input` to a fresh server all at once or one byte at a time; returns the first error
/// (if any) and everything queued for the client.
fn run_server(config: Config, input: &[u8], bytewise: bool) -> (Option<ServerError>, Vec<u8>) {
    let mut server = Server::new(config);
    let mut sent = Vec::new();
    let mut out = [0u8; 600];
    let chunks: Vec<&[u8]> = if bytewise {
        input.chunks(1).collect()
    } else {
        vec![input]
    };
    let mut error = None;
    for chunk in chunks {
        let mut rest = chunk;
        loop {
            match server.feed(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) => error = Some(e),
            }
            loop {
                let n = server.poll_transmit(&mut out);
                if n == 0 {
                    break;
                }
                sent.extend_from_slice(&out[..n]);
            }
            // GSS-API events: answer a whole token with an empty one so the exchange continues.
            while let Some(event) = server.poll_event() {
                if let Event::GssapiContext { .. } = event {
                    server.send_gssapi_token(0).unwrap();
                }
            }
            if error.is_some() || rest.is_empty() {
                break;
            }
        }
        if error.is_some() {
            break;
        }
    }
    (error, sent)
}

/// server_chunks, crash-a31e7263: a message still partial after exactly the input buffer's
/// capacity (520 octets) failed with `MessageTooLong` when it arrived in pieces but was
/// buffered (and the error deferred to the next octet) when it arrived in one read. The
/// message was a GSS-API context token, which the server now streams instead of buffering:
/// the same input is a token in progress, however it is split.
#[test]
fn partial_message_filling_the_input_buffer_fails_however_it_is_split() {
    let config = Config::new(Authentication::Required {
        password: false,
        gssapi: true,
    });
    let mut input = vec![5, 1, 1]; // greeting offering GSS-API
    input.extend_from_slice(&[1, 1, 0xff, 0xff]); // context token of 65535 octets…
    input.resize(3 + socksgate_core::server::MAX_MESSAGE_LEN, 0xaa); // …of which 516 arrive
    let whole = run_server(config, &input, false);
    let bytewise = run_server(config, &input, true);
    assert_eq!(whole.0, None::<ServerError>);
    assert_eq!(whole, bytewise);
    assert_eq!(whole.1, [5, 1]); // method GSS-API; the token is still coming
}
