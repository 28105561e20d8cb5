//! UDP ASSOCIATE (waiting for `socksgate_core::udp` to land on main).

use socksgate_core::server::Request;
use socksgate_core::wire::ReplyCode;

use crate::session::{Conn, Ctx, SessionError};

pub(crate) async fn run(
    conn: &mut Conn,
    _request: &Request,
    _ctx: &Ctx<'_>,
) -> Result<(), SessionError> {
    conn.respond(Err(ReplyCode::CommandNotSupported)).await?;
    Err(SessionError::Refused(
        "udp associate not yet supported".into(),
    ))
}
