//! Auto traits of every public type, in one table.

use ipc_pool::*;

fn send<T: Send>() {}
fn sync<T: Sync>() {}

#[test]
fn auto_traits() {
    send::<Pool>();
    sync::<Pool>();
    send::<PoolBuilder>();
    sync::<PoolBuilder>();
    send::<AsyncResult<u64>>();
    sync::<AsyncResult<u64>>();
    send::<Process>();
    sync::<Process>();
    send::<ProcessHandle<String>>();
    sync::<ProcessHandle<String>>();
    sync::<Scope<'static, 'static>>();
    send::<ProcessBuilder>();
    sync::<ProcessBuilder>();
    send::<Policy>();
    sync::<Policy>();
    send::<ThreadPolicy>();
    sync::<ThreadPolicy>();
    send::<Error>();
    sync::<Error>();
    send::<IMap<'static, u64, u64, std::ops::Range<u64>>>();
    send::<IMapUnordered<'static, u64, u64, std::ops::Range<u64>>>();
}
