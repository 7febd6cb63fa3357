//! The routing daemon's side (BIRD 2): its configuration rendered from
//! `[bgp]`, and the state of its sessions read from its control socket.
