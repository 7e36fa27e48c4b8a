/*!
Inject mode, "never reveal" (SPEC §14): the sandbox holds sentinels, and
the daemon adds the real credential to each request it proxies to an
allow-listed provider.

- [`sentinel`]: what `get_token`/`get_api_key` serve instead of secrets;
- [`routes`]: the upstream hosts, their allow-lists and credential headers;
- [`request`]: the strict reading of a request from the sandbox;
- [`body`]: what the body policy needs of a body, read without a JSON tree;
- [`upstream`]: the HTTP/1.1 client towards the provider;
- [`scrub`]: the real credential masked out of responses;
- [`usage`]: the token usage a provider reports, for the audit line;
- [`proxy`]: the proxy socket, tying them together.
*/

pub mod body;
pub mod proxy;
pub mod request;
pub mod routes;
pub mod scrub;
pub mod sentinel;
pub mod upstream;
pub mod usage;

pub use proxy::InjectConfig;
pub use sentinel::Sentinels;
