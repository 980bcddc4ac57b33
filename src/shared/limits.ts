// Limits and defaults in one place: the spec schema, the agent's wire schema, the exec builders and the drivers
// all check against these, so a value the spec accepts is one every lower layer accepts too (and nothing else).

// Layer 2.

/** Lowest 802.1Q VLAN id (0 means "priority tag only"). */
export const VLAN_ID_MIN = 1;
/** Highest 802.1Q VLAN id (4095 is reserved). */
export const VLAN_ID_MAX = 4094;
/** Highest VXLAN network identifier (24 bits). */
export const VNI_MAX = 16_777_215;
/** IANA's VXLAN UDP port. */
export const VXLAN_PORT = 4789;
/** Bytes VXLAN adds around a frame on an IPv4 underlay (outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8). */
export const VXLAN_OVERHEAD = 50;
/** Lowest TCP/UDP port. */
export const PORT_MIN = 1;
/** Highest TCP/UDP port. */
export const PORT_MAX = 65_535;

// MTU.

/** Smallest MTU vmlink sets anywhere: every IPv4 path must carry 576 bytes (RFC 791). */
export const MTU_MIN = 576;
/** Largest MTU of a network and its VM NICs (jumbo frames; every common NIC and switch carries 9000). */
export const NETWORK_MTU_MAX = 9000;
/** Largest MTU of a host NIC or a lab switch: above `NETWORK_MTU_MAX`, so an underlay can carry jumbo overlays. */
export const LINK_MTU_MAX = 9216;
/** MTU of a network or link nobody configured. */
export const DEFAULT_MTU = 1500;
/** Default MTU of a VXLAN network: `DEFAULT_MTU` less the VXLAN overhead. */
export const DEFAULT_OVERLAY_MTU = DEFAULT_MTU - VXLAN_OVERHEAD;

/** Whether `mtu` is a valid network/VM NIC MTU. */
export const isNetworkMtu = (mtu: number): boolean =>
  Number.isInteger(mtu) && mtu >= MTU_MIN && mtu <= NETWORK_MTU_MAX;
/** Whether `mtu` is a valid host NIC / underlay MTU. */
export const isLinkMtu = (mtu: number): boolean =>
  Number.isInteger(mtu) && mtu >= MTU_MIN && mtu <= LINK_MTU_MAX;
/** Whether `id` is a valid 802.1Q VLAN id. */
export const isVlanId = (id: number): boolean =>
  Number.isInteger(id) && id >= VLAN_ID_MIN && id <= VLAN_ID_MAX;

// Commit-confirm.

/** Default window in which the controller must confirm a risky change before the agent reverts it. */
export const CONFIRM_WINDOW_MS = 60_000;
/** Shortest commit-confirm window a spec may set (`hosts[].confirmTimeoutSeconds`). */
export const CONFIRM_WINDOW_MIN_S = 5;
/** Longest commit-confirm window a spec may set. */
export const CONFIRM_WINDOW_MAX_S = 600;
/** How long an agent keeps finished commit-confirm records (for the controller's late questions). */
export const CONFIRM_RECORD_KEEP_MS = 24 * 3600_000;
/** Extra time the controller waits past a window for the agent's rollback to finish. */
export const CONFIRM_ROLLBACK_GRACE_MS = 10_000;
/** How long the controller keeps asking an unreachable agent whether it rolled back. */
export const CONFIRM_ROLLBACK_POLL_MS = 60_000;

// Timeouts (milliseconds).

/** A host command run through the exec layer, unless the caller says otherwise. */
export const COMMAND_TIMEOUT_MS = 60_000;
/** An Open vSwitch daemon started with `--detach` until it is ready; `ovs-appctl exit` until it returns. */
export const OVS_DAEMON_START_TIMEOUT_MS = 30_000;
/** `ovs-appctl ... exit` until it returns. */
export const OVS_DAEMON_EXIT_TIMEOUT_MS = 10_000;
/** dnsmasq until it has written its pidfile (it takes ~10 ms; a failing config exits at once). */
export const DNSMASQ_START_TIMEOUT_MS = 5_000;
/** A daemon (dnsmasq, OVS) between SIGTERM and SIGKILL. */
export const DAEMON_STOP_GRACE_MS = 3_000;
/** A detached controller (`vmlink daemon --stop`) between SIGTERM and SIGKILL. */
export const CONTROLLER_STOP_GRACE_MS = 10_000;
/** A process after SIGKILL until it is gone. */
export const KILL_WAIT_MS = 2_000;
/** QEMU until QMP reports `running`. */
export const VM_START_TIMEOUT_MS = 30_000;
/** A guest after ACPI powerdown until QEMU exits. */
export const VM_POWERDOWN_TIMEOUT_MS = 30_000;
/** QEMU after QMP `quit`, or after SIGKILL, until it is gone. */
export const VM_QUIT_TIMEOUT_MS = 5_000;
/** A hot-unplugged NIC until the guest has released it (QMP DEVICE_DELETED). */
export const NIC_UNPLUG_TIMEOUT_MS = 30_000;
/** A quick QMP question (status, quit) that must not hold up a report. */
export const QMP_STATUS_TIMEOUT_MS = 2_000;
/** One QMP command or connection. */
export const QMP_TIMEOUT_MS = 5_000;
/**
 * `query-migrate` while a migration runs: QEMU holds its big lock through the switch-over's last copy, which under
 * TCG on a loaded host takes seconds; a poll that gives up sooner rolls back a migration about to succeed.
 */
export const MIGRATION_QUERY_TIMEOUT_MS = 30_000;
/** The explain's dirty-rate measurement (s): long enough to see a busy guest, short enough for a pre-flight. */
export const MIGRATION_DIRTY_RATE_S = 1;
/** The longest dirty-rate measurement an agent takes. */
export const MIGRATION_DIRTY_RATE_MAX_S = 10;
/** A dirty rate beyond any memory bus (MiB/s): a larger figure from a hypervisor is refused as nonsense. */
export const DIRTY_RATE_MIBPS_MAX = 10_000_000;
/** The guest agent until it answers after boot. */
export const GUEST_AGENT_BOOT_TIMEOUT_MS = 60_000;
/** One guest agent connection. */
export const GUEST_AGENT_CONNECT_TIMEOUT_MS = 5_000;
/** One command run in a guest through its agent. */
export const GUEST_EXEC_TIMEOUT_MS = 30_000;
/** The hot-plug helper that hands a new NIC's tap to QEMU over QMP (one short host command). */
export const NIC_PLUG_COMMAND_TIMEOUT_MS = 30_000;
/** Writing a NIC's static address into a guest through its agent. */
export const GUEST_STATIC_IP_TIMEOUT_MS = 10_000;
/** One HTTP request of an API or agent client that sets no timeout of its own. */
export const HTTP_REQUEST_TIMEOUT_MS = 120_000;
/** A quick question from the controller to an agent (health, a commit-confirm's state). */
export const AGENT_QUICK_TIMEOUT_MS = 5_000;
/** An agent's full host report or doctor checks, asked by the controller. */
export const AGENT_QUERY_TIMEOUT_MS = 60_000;
/** One action (network, VM, uplink change) the controller asks an agent to carry out. */
export const AGENT_ACTION_TIMEOUT_MS = 300_000;
/** Actions in one batch request to an agent (a phase's steps for one host). */
export const AGENT_BATCH_MAX_ACTIONS = 2_000;
/** Extra time the controller waits for a batch of actions, per action in it, past `AGENT_ACTION_TIMEOUT_MS`. */
export const AGENT_BATCH_PER_ACTION_MS = 30_000;
/** VMs an agent starts at once when a batch starts several (QEMU start-up is CPU-bound). */
export const VM_START_CONCURRENCY = 3;
/** VM directories and configs an agent writes at once when a batch creates several VMs (file I/O only). */
export const VM_CREATE_CONCURRENCY = 8;
/** dnsmasq instances an agent starts (or stops) at once when a batch creates several networks. */
export const DNSMASQ_START_CONCURRENCY = 32;
/** A guest's interfaces, asked through its agent. */
export const GUEST_INTERFACES_TIMEOUT_MS = 30_000;
/** Extra time an agent gives a probe command on the host past the probe's own timeout. */
export const PROBE_HOST_MARGIN_MS = 3_000;
/** Extra time an agent gives a probe command in a guest (through its guest agent) past the probe's own timeout. */
export const PROBE_GUEST_MARGIN_MS = 5_000;
/** Extra time the controller waits for a probe's answer past the probe's timeout (above both agent margins). */
export const PROBE_ANSWER_MARGIN_MS = 20_000;
/** Extra time the controller waits for a guest command's answer past the command's timeout. */
export const GUEST_EXEC_ANSWER_MARGIN_MS = 10_000;
/** A host report asked by the controller (apply, confirm). */
export const AGENT_REPORT_TIMEOUT_MS = 20_000;
/** A lab agent until it answers its health check after start. */
export const LAB_AGENT_START_TIMEOUT_MS = 30_000;
/** The lab's management relay until its sockets exist. */
export const LAB_RELAY_START_TIMEOUT_MS = 15_000;
/** One health check of a lab agent on its own socket. */
export const LAB_HEALTH_TIMEOUT_MS = 2_000;
/** One health check of a lab agent across the lab LAN (relay, LAN, TCP). */
export const LAB_PATH_CHECK_TIMEOUT_MS = 5_000;

// Sizes.

/** Most probes in one batch from one source (`POST /v1/probes`); they run at once in one command. */
export const PROBE_BATCH_MAX = 128;
/** Finished tasks the controller keeps for clients that ask about them late (the newest ones). */
export const FINISHED_TASKS_KEPT = 200;

// Bounds of the values the spec accepts and the agent takes off the wire (the agent checks them itself too).

/** Shortest prefix of a network's CIDR (a /8 at most). */
export const NETWORK_PREFIX_MIN = 8;
/** Longest prefix of a network's CIDR (a /30 still has two hosts). */
export const NETWORK_PREFIX_MAX = 30;
/** Shortest prefix of an address on an interface (host uplink addresses, a guest's fixed address). */
export const ADDRESS_PREFIX_MIN = 8;
/** Longest prefix of an address on an interface. */
export const ADDRESS_PREFIX_MAX = 32;
/** Most vCPUs of one VM. */
export const VM_CPUS_MAX = 64;
/** Least memory of one VM (MiB). */
export const VM_MEMORY_MIB_MIN = 64;
/** Most memory of one VM (MiB): 1 TiB. */
export const VM_MEMORY_MIB_MAX = 1024 * 1024;
/** Most NICs of one VM. */
export const VM_NICS_MAX = 8;
/** Most extra disks of one VM (each is one virtio-blk device on the PCI bus). */
export const VM_DISKS_MAX = 16;
/**
 * How long one QMP command attaching an encrypted disk may take: opening a LUKS header derives its key with PBKDF2
 * iterations calibrated to take ~2 s on the host that made it (longer on a busy or slower one).
 */
export const LUKS_OPEN_TIMEOUT_MS = 60_000;
/** Largest secret value (bytes): a LUKS passphrase, a CHAP secret or a backup key fits many times over. */
export const SECRET_VALUE_MAX_BYTES = 4096;
/** The same value in base64, as it crosses the wire. */
export const SECRET_VALUE_BASE64_MAX = Math.ceil(SECRET_VALUE_MAX_BYTES / 3) * 4;
/** Most secrets the controller keeps. */
export const SECRETS_MAX = 1024;
/** Largest extra disk (MiB): 16 TiB. */
export const DISK_SIZE_MIB_MAX = 16 * 1024 * 1024;
/** Most VLAN networks one trunk NIC carries. */
export const TRUNK_NETWORKS_MAX = 64;
/** Most port forwards of one network. */
export const NETWORK_FORWARDS_MAX = 1_024;
/** Most DHCP reservations of one network (one per VM NIC with a fixed address). */
export const DHCP_RESERVATIONS_MAX = 65_536;
/** Most remote VTEPs of one VXLAN network on one host (every other member host). */
export const VXLAN_REMOTES_MAX = 4_096;
/** Most addresses vmlink puts on a host's uplink. */
export const UPLINK_ADDRESSES_MAX = 64;
/** Largest cloud-init user-data of a VM (bytes, counted as UTF-16 code units). */
export const CLOUD_INIT_USER_DATA_MAX = 1024 * 1024;
/** Most SSH keys a VM's cloud-init seed authorises. */
export const CLOUD_INIT_SSH_KEYS_MAX = 256;
/** Longest SSH public key line (an RSA 16384-bit key is ~2.8 KB). */
export const SSH_KEY_LINE_MAX = 16 * 1024;
/** Most arguments of one command run in a guest. */
export const GUEST_EXEC_ARGS_MAX = 4_096;
/** Longest argument of a command run in a guest (characters). */
export const GUEST_EXEC_ARG_MAX = 128 * 1024;
/** Largest stdin of a command run in a guest (characters). */
export const GUEST_EXEC_INPUT_MAX = 8 * 1024 * 1024;

// Sizes of what vmlink reads from peers it does not trust (guests, QEMU, the network, command output).

/** Largest HTTP request body an agent or the controller accepts (a batch of 2,000 VM configs fits). */
export const HTTP_BODY_MAX_BYTES = 16 * 1024 * 1024;
/** Largest QMP message vmlink reads from a QEMU (the biggest reply, query-qmp-schema, is ~200 KiB). */
export const QMP_MESSAGE_MAX_BYTES = 4 * 1024 * 1024;
/** Largest guest-agent message vmlink reads from a guest (guest-exec output arrives base64 in one reply). */
export const GUEST_AGENT_MESSAGE_MAX_BYTES = 16 * 1024 * 1024;
/** Most output (stdout and stderr each) vmlink keeps of one host command before it kills it. */
export const COMMAND_OUTPUT_MAX_BYTES = 64 * 1024 * 1024;

// A jailed QEMU (one per VM).

/** Open descriptors one QEMU may hold (RLIMIT_NOFILE): disks, taps, sockets, event fds. */
export const QEMU_MAX_OPEN_FILES = 4_096;
/** Threads one VM's QEMU may run (RLIMIT_NPROC, per VM uid; pids.max of its cgroup). */
export const QEMU_MAX_TASKS = 1_024;
/** A VM's console log (and QEMU's own log) beyond which the agent rotates it to `.1`. */
export const VM_LOG_MAX_BYTES = 1 << 20;
/** How often the agent checks its VMs' logs against `VM_LOG_MAX_BYTES`. */
export const VM_LOG_CHECK_INTERVAL_MS = 5_000;

// API tokens and the audit trail (the controller's store).

/** API tokens the controller keeps (each is a small record; a listing reads them all). */
export const API_TOKENS_MAX = 1_000;
/** Names (or globs) in one scope dimension of an API token. */
export const TOKEN_SCOPE_ENTRIES_MAX = 64;
/** Longest `Authorization` header the controller parses (a token is ~70 characters). */
export const AUTH_HEADER_MAX_CHARS = 512;
/** Audit entries kept; beyond it the oldest are pruned as new ones arrive. */
export const AUDIT_ENTRIES_MAX = 10_000;
/** How long a token's `last used` may lag: the store is written at most this often per token. */
export const TOKEN_LAST_USED_RESOLUTION_MS = 60_000;

// VM disks over QMP (issue 10).

/** One QMP disk command (block_resize, a snapshot transaction, query-block): a monitor held by a job answers late. */
export const VM_DISK_QMP_TIMEOUT_MS = 60_000;
/** A `snapshot-save`/`snapshot-load`/`snapshot-delete` job of a running VM (RAM written to or read from a disk). */
export const VM_SNAPSHOT_JOB_TIMEOUT_MS = 600_000;
/** Output of `qemu-img info` about one disk that vmlink reads (its snapshot list dominates: 64 are a few KiB). */
export const QEMU_IMG_INFO_MAX_BYTES = 1 << 20;
/** Longest target name `openDisks` reports for one disk (a path or a URL). */
export const OPEN_DISK_TARGET_MAX_CHARS = 512;

// The cluster (issue 11).

/** etcd members a cluster names (etcd itself recommends 3 or 5). */
export const ETCD_MEMBERS_MAX = 7;
/** Cluster controllers a lab starts. */
export const LAB_CONTROLLERS_MAX = 3;
/** Hosts an HA policy may list. */
export const HA_HOSTS_MAX = 256;
/** One etcd request (a get, a put, a transaction, a lease grant or renewal). */
export const ETCD_REQUEST_TIMEOUT_MS = 3_000;
/** Owner records one controller reads at once while its actions leave for the agents (a fleet's apply). */
export const OWNER_READ_CONCURRENCY = 32;
/** Owner records an apply writes at once (compare-and-set each, with its event). */
export const OWNER_WRITE_CONCURRENCY = 32;
/**
 * Largest value vmlink writes to or accepts from etcd under one key, as stored: a store value over
 * STORE_COMPRESS_MIN_BYTES is stored zstd-compressed, so this bounds the compressed bytes.
 */
export const ETCD_VALUE_MAX_BYTES = 1 << 20;
/**
 * Largest JSON text of one Store value, both stores (a spec's text is the largest: the API takes 4 MiB of YAML, and a
 * 1,000-host x 20-VM fleet is ~1.4 MB). Also the bound of a compressed value's expansion on read (no zip bomb).
 */
export const STORE_VALUE_MAX_BYTES = 16 << 20;
/** A Store value's JSON text from this size on is stored zstd-compressed in etcd (owner records etc. stay plain). */
export const STORE_COMPRESS_MIN_BYTES = 64 << 10;
/**
 * Largest etcd response a client accepts (gRPC's default is 4 MiB). A range is read in pages that fit it even when
 * every value is ETCD_VALUE_MAX_BYTES: a response over it would count as a member failure and reset the connection.
 */
export const ETCD_RESPONSE_MAX_BYTES = 64 << 20;
/** A lab etcd member must answer its health endpoint within this after start. */
export const LAB_ETCD_START_TIMEOUT_MS = 20_000;
/** A lab cluster controller must answer on its socket within this after start. */
export const LAB_CONTROLLER_START_TIMEOUT_MS = 20_000;
/** A peer agent's answer to `GET /v1/cluster/lease` (the outage check). */
export const PEER_LEASE_TIMEOUT_MS = 800;
/** How often a drill's sampler lists every host's QEMU processes. */
export const DRILL_SAMPLE_MS = 100;
/** A drill gives up waiting for recovery after this. */
export const DRILL_RECOVERY_TIMEOUT_MS = 90_000;
/** Largest answer an agent reads from a peer's `GET /v1/cluster/lease` (a status naming up to 4096 fenced VMs). */
export const PEER_LEASE_MAX_BYTES = 512 * 1024;
/** A fenced VM's QEMU gets this long to act on QMP `quit` before SIGKILL (a watchdog, not a shutdown). */
export const VM_FENCE_QUIT_MS = 500;
/** How long an agent asked by a peer (`GET /v1/cluster/lease?verify=1`) waits for its own renewal before answering. */
export const PEER_LEASE_VERIFY_MS = 400;

// NBD client (drivers/backup/nbd-client.ts): what it reads from an NBD server (QEMU, qemu-nbd) is bounded.

/** A request to an NBD server without its reply (and a handshake step) after this fails the connection. */
export const NBD_REQUEST_TIMEOUT_MS = 60_000;
/** Largest option reply payload of the handshake (names and messages are at most 4 KiB in the protocol). */
export const NBD_OPTION_REPLY_MAX_BYTES = 16 * 1024;
/** Most option replies one option may draw (meta contexts, infos) before the server counts as misbehaving. */
export const NBD_OPTION_REPLIES_MAX = 256;
/** Largest read or write of one NBD request (qemu-nbd's own maximum payload); larger calls are split. */
export const NBD_PAYLOAD_MAX_BYTES = 32 * 1024 * 1024;
/** Most extents one block-status reply chunk may carry (QEMU sends at most 128 Ki per request). */
export const NBD_EXTENTS_MAX = 256 * 1024;
/** Largest range one NBD block-status request asks about (a call over more loops). */
export const NBD_BLOCK_STATUS_REQUEST_MAX_BYTES = 1024 * 1024 * 1024;
/** Largest error message of a structured error reply (the protocol's own limit). */
export const NBD_ERROR_MESSAGE_MAX_BYTES = 4096;
/** qemu-nbd from its start until it serves (its pidfile is written): an iSCSI login or NFS mount can be slow. */
export const QEMU_NBD_START_TIMEOUT_MS = 30_000;
/** A stopped VM's backup daemon (qemu-storage-daemon) from its start until its monitor listens (pidfile written). */
export const BACKUP_DAEMON_START_TIMEOUT_MS = 30_000;
/** Each QMP command to that daemon (opening images, a bitmap transaction, an export): a loaded host can be slow. */
export const BACKUP_DAEMON_QMP_TIMEOUT_MS = 30_000;

/**
 * glibc malloc settings for an agent process (GLIBC_TUNABLES, read when the process starts): 4 MiB buffers (zstd's,
 * OpenSSL's, Node's) come from the heap instead of a fresh mmap each, and freed memory is kept for the next chunk
 * rather than returned and faulted in again. Measured on a full 1 GiB backup: page faults 118-133 k -> 50 k, CPU
 * 10.9-12.3 s -> 7.2-7.5 s (bench/README.md); 1 % rounds unchanged.
 */
export const AGENT_GLIBC_TUNABLES =
  'glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=268435456';

// Backup capture (issue 12, drivers/hypervisor/qemu/backup-*.ts).
/** The guest agent must answer (connect + guest-sync) within this for a frozen backup; else it is crash-consistent. */
export const BACKUP_FREEZE_CONNECT_TIMEOUT_MS = 2_000;
/** `guest-fsfreeze-freeze` (it syncs the guest's filesystems first) must return within this, else thaw and go on. */
export const BACKUP_FREEZE_TIMEOUT_MS = 10_000;
/** A backup view's teardown waits this long for QEMU to drop an export and end a fleecing job. */
export const BACKUP_TEARDOWN_WAIT_MS = 30_000;
