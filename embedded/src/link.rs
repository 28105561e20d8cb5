//! Link and address changes, reported as they happen.
//!
//! When the link drops, new connections cannot arrive and sessions in progress end: with
//! DHCP, embassy-net withdraws the address at link loss and smoltcp resets every socket
//! bound to it (no RST goes out: the address is gone), so each session ends at once and is
//! logged `end=reset`; with a static address they end by their own timeouts (TCP
//! retransmission, the relay's idle limit) or go on if the link returns first. embassy-net
//! resets its DHCP client as soon as it sees the link return (a DISCOVER at once, not at
//! smoltcp's 10 s retry; how soon it sees it is the Ethernet driver's link poll), and the
//! gateway's listening sockets serve again on the new address. This task only tells the
//! operator.

use core::fmt;

use embassy_futures::select::select;
use embassy_net::Stack;

/// Reports every address obtained (DHCP or static), link loss and link return through
/// `say`, forever.
pub async fn watch(stack: Stack<'_>, say: impl Fn(fmt::Arguments<'_>)) -> ! {
    loop {
        stack.wait_config_up().await;
        if let Some(v4) = stack.config_v4() {
            say(format_args!(
                "address: {} gateway {:?} dns {:?}",
                v4.address,
                v4.gateway,
                v4.dns_servers.first()
            ));
        }
        select(stack.wait_link_down(), stack.wait_config_down()).await;
        if stack.is_link_up() {
            say(format_args!("address lost: asking again"));
        } else {
            say(format_args!("link down: waiting for it"));
            stack.wait_link_up().await;
            say(format_args!("link up"));
        }
    }
}
