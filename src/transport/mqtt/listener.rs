//! Connection admission for both MQTT listeners: the per-worker connection limit (back-pressure
//! into the listen backlog), the CONNECT deadline counted from the TCP accept, and the registry
//! that a graceful stop uses to close idle sessions. It knows nothing of MQTT packets.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::net::IpAddr;
use std::rc::{Rc, Weak};
use std::task::Poll;

use ntex::io::types::PeerAddr;
use ntex::io::{Io, IoRef};
use ntex::rt::JoinHandle;
use ntex::service::{Ctx, Service, State};
use ntex::task::LocalWaker;
use ntex::time::{Millis, sleep};
use ntex::tls::rustls::TlsAcceptor;
use ntex::util::HashMap;
use ntex_mqtt::{MqttConnectError, MqttError};

use crate::metrics as m;

/// One accepted connection, from the TCP accept until it closes. The MQTT handshake receives it
/// as its connection state; the session keeps it to account for requests in flight.
#[derive(Debug)]
pub(crate) struct Conn {
    id: u64,
    io: IoRef,
    /// The client's address (for the brute-force protection).
    peer: Option<IpAddr>,
    worker: Rc<Worker>,
    connected: Cell<bool>,
    in_flight: Cell<u32>,
    closing: Cell<bool>,
    deadline: TimerSlot,
}

impl Conn {
    /// CONNECT arrived in time: the deadline no longer applies.
    pub(crate) fn mark_connected(&self) {
        self.connected.set(true);
        self.deadline.cancel();
    }

    /// The client's address, if the socket tells.
    pub(crate) fn peer(&self) -> Option<IpAddr> {
        self.peer
    }

    /// Counts a request as in flight until the guard drops (after its response is encoded), so
    /// that a graceful stop lets it finish.
    pub(crate) fn begin_request(self: &Rc<Self>) -> InFlight {
        self.in_flight.set(self.in_flight.get() + 1);
        InFlight(self.clone())
    }

    fn shut_down(&self) {
        if !self.connected.get() || self.in_flight.get() == 0 {
            self.io.close();
        } else {
            self.closing.set(true);
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.deadline.cancel();
        self.worker.remove(self.id);
        m::mqtt_connection_closed();
    }
}

/// A spawned timer task that is cancelled when replaced or dropped.
#[derive(Default)]
pub(crate) struct TimerSlot(Cell<Option<JoinHandle<()>>>);

impl TimerSlot {
    /// Sets the timer, cancelling the previous one.
    pub(crate) fn replace(&self, timer: JoinHandle<()>) {
        if let Some(previous) = self.0.replace(Some(timer)) {
            previous.cancel();
        }
    }

    /// Cancels the timer, if any.
    pub(crate) fn cancel(&self) {
        if let Some(timer) = self.0.take() {
            timer.cancel();
        }
    }
}

impl Drop for TimerSlot {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl std::fmt::Debug for TimerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerSlot")
    }
}

/// A request in flight on a connection; see [`Conn::begin_request`].
#[derive(Debug)]
pub(crate) struct InFlight(Rc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let conn = &self.0;
        let left = conn.in_flight.get().saturating_sub(1);
        conn.in_flight.set(left);
        // A graceful stop waits for the last response, then closes (the close flushes it).
        if left == 0 && conn.closing.get() {
            conn.io.close();
        }
    }
}

/// The connections of one worker thread, plain and TLS together.
#[derive(Debug)]
pub(crate) struct Worker {
    limit: usize,
    conns: RefCell<HashMap<u64, Weak<Conn>>>,
    next_id: Cell<u64>,
    room: LocalWaker,
    drained: LocalWaker,
    stopping: Cell<bool>,
}

thread_local! {
    static WORKER: RefCell<Option<Rc<Worker>>> = const { RefCell::new(None) };
}

impl Worker {
    /// This worker thread's registry; both listeners of a worker share it, so the limit counts
    /// plain and TLS connections together.
    pub(crate) fn current(limit: usize) -> Rc<Worker> {
        WORKER.with(|slot| {
            slot.borrow_mut()
                .get_or_insert_with(|| {
                    Rc::new(Worker {
                        limit,
                        conns: RefCell::new(HashMap::default()),
                        next_id: Cell::new(0),
                        room: LocalWaker::new(),
                        drained: LocalWaker::new(),
                        stopping: Cell::new(false),
                    })
                })
                .clone()
        })
    }

    fn admit(self: &Rc<Self>, io: &Io<impl ntex::io::Filter>, connect_timeout: Millis) -> Rc<Conn> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let conn = Rc::new(Conn {
            id,
            io: io.get_ref(),
            peer: io.query::<PeerAddr>().get().map(|addr| addr.0.ip()),
            worker: self.clone(),
            connected: Cell::new(false),
            in_flight: Cell::new(0),
            closing: Cell::new(false),
            deadline: TimerSlot::default(),
        });
        self.conns.borrow_mut().insert(id, Rc::downgrade(&conn));
        m::mqtt_connection_opened();
        // The deadline covers the TLS handshake, the protocol version and the whole CONNECT
        // packet, so a client dribbling bytes cannot hold the slot longer than a silent one.
        let weak = Rc::downgrade(&conn);
        let timer = ntex::rt::spawn(async move {
            sleep(connect_timeout).await;
            if let Some(conn) = weak.upgrade()
                && !conn.connected.get()
            {
                m::mqtt_refused("connect_timeout");
                tracing::debug!("no CONNECT within the deadline; closing the connection");
                conn.io.terminate();
            }
        });
        conn.deadline.replace(timer);
        conn
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.borrow_mut();
        conns.remove(&id);
        if conns.len() < self.limit {
            self.room.wake();
        }
        if conns.is_empty() {
            self.drained.wake();
        }
    }

    async fn room(&self) {
        poll_fn(|cx| {
            if self.conns.borrow().len() < self.limit {
                Poll::Ready(())
            } else {
                self.room.register(cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// Graceful stop: close every connection that holds no request in flight, let the others
    /// answer first, and return when none is left (ntex bounds the wait with its shutdown
    /// timeout).
    async fn shut_down(&self) {
        if !self.stopping.replace(true) {
            let conns: Vec<Rc<Conn>> = self
                .conns
                .borrow()
                .values()
                .filter_map(Weak::upgrade)
                .collect();
            for conn in conns {
                conn.shut_down();
            }
        }
        poll_fn(|cx| {
            if self.conns.borrow().is_empty() {
                Poll::Ready(())
            } else {
                self.drained.register(cx.waker());
                Poll::Pending
            }
        })
        .await
    }
}

/// Admission in front of the plain listener's MQTT service.
#[derive(Debug)]
pub(crate) struct Plain<S> {
    pub(crate) worker: Rc<Worker>,
    pub(crate) connect_timeout: Millis,
    pub(crate) mqtt: S,
}

impl<St, S> Service<St, Io> for Plain<S>
where
    S: Service<St, State<Rc<Conn>, Io>, Res = ()>,
{
    type Res = ();
    type Error = S::Error;

    async fn ready(&self, ctx: Ctx<'_, Self, St>) -> Result<(), Self::Error> {
        self.worker.room().await;
        ctx.ready(&self.mqtt).await
    }

    async fn call(&self, io: Io, ctx: Ctx<'_, Self, St>) -> Result<(), Self::Error> {
        let conn = self.worker.admit(&io, self.connect_timeout);
        ctx.call(
            &self.mqtt,
            State {
                req: io,
                state: conn,
            },
        )
        .await
    }

    async fn shutdown(&self, ctx: Ctx<'_, Self, St>) {
        self.worker.shut_down().await;
        ctx.shutdown(&self.mqtt).await;
    }
}

/// Admission, then the TLS handshake, in front of the TLS listener's MQTT service.
#[derive(Debug)]
pub(crate) struct Tls<S> {
    pub(crate) worker: Rc<Worker>,
    pub(crate) connect_timeout: Millis,
    pub(crate) acceptor: TlsAcceptor,
    pub(crate) mqtt: S,
}

impl<St, S, E> Service<St, Io> for Tls<S>
where
    S: Service<
            St,
            State<Rc<Conn>, Io<ntex::io::Layer<ntex::tls::rustls::TlsServerFilter>>>,
            Res = (),
            Error = MqttError<E>,
        >,
{
    type Res = ();
    type Error = MqttError<E>;

    async fn ready(&self, ctx: Ctx<'_, Self, St>) -> Result<(), Self::Error> {
        self.worker.room().await;
        ctx.ready::<_, Io>(&self.acceptor).await?;
        ctx.ready(&self.mqtt).await
    }

    async fn call(&self, io: Io, ctx: Ctx<'_, Self, St>) -> Result<(), Self::Error> {
        let conn = self.worker.admit(&io, self.connect_timeout);
        let io = ctx.call(&self.acceptor, io).await.map_err(|error| {
            tracing::debug!(%error, "TLS handshake failed");
            MqttError::Connect(MqttConnectError::Disconnected(Some(error)))
        })?;
        ctx.call(
            &self.mqtt,
            State {
                req: io,
                state: conn,
            },
        )
        .await
    }

    async fn shutdown(&self, ctx: Ctx<'_, Self, St>) {
        self.worker.shut_down().await;
        ctx.shutdown(&self.mqtt).await;
    }
}
