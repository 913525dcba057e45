//! The hookplane integration suite: every test starts the real server on
//! port 0 with a fresh database and calls it with a real tonic client, once
//! on SQLite and once on PostgreSQL (when HOOKPLANE_TEST_POSTGRES_URL is set).

mod harness;

mod auth;
mod bad_input;
mod bootstrap;
mod cli;
mod concurrency;
mod create_paths;
mod credentials;
mod data_plane;
mod database;
mod defaults;
mod endpoints;
mod event_types;
mod fencing;
mod http_listener;
mod lifecycle;
mod limits;
mod local_resolver;
mod outbound;
mod paging;
mod rekey;
mod replays;
mod replicas;
mod resolve_pages;
mod restart;
mod seeds;
mod serving;
mod storage;
mod subscriptions;
mod tenants;
mod tls;
mod verification;
mod watch_feed;
mod watch_revisions;
