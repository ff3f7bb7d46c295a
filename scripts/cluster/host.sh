# What the node changes on the host, and how `down` undoes it (sourced by scripts/cluster.sh):
# sysctls, the node's interfaces and routes, nftables/iptables state, mounts, network namespaces,
# cgroups and the fixed directories. Every undo step is safe to run when there is nothing to undo,
# so `down` also cleans up after a crashed `up`.

# Host settings the kubelet (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops,
# kernel.keys.*), the bridge plugin (ip_forward) and `up` itself (bridge-nf-call-iptables,
# so a pod reaching a Service backed by a pod on the same bridge gets its reply un-NATed)
# change. `up` saves their values first; `down` writes them back.
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
         kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv6.conf.all.forwarding
         net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
         net.bridge.bridge-nf-call-ip6tables)
SYSCTL_SAVE="$RUN_DIR/sysctl.saved"
NFT_TABLES_SAVE="$RUN_DIR/nft-tables.saved"

save_host_state() {
  # Kept if present: after a crash the file still holds the values from before the first `up`.
  if [[ ! -f "$SYSCTL_SAVE" ]]; then
    local s v
    for s in "${SYSCTLS[@]}"; do
      v="$(sysctl -n "$s" 2>/dev/null)" && printf '%s=%s\n' "$s" "$v"
    done >"$SYSCTL_SAVE.tmp"
    mv "$SYSCTL_SAVE.tmp" "$SYSCTL_SAVE"
  fi
  [[ -f "$NFT_TABLES_SAVE" ]] || nft list tables >"$NFT_TABLES_SAVE" 2>/dev/null || : >"$NFT_TABLES_SAVE"
}

restore_sysctls() {
  [[ -f "$SYSCTL_SAVE" ]] || return 0
  local line
  while IFS= read -r line; do
    [[ -n "$line" ]] && { sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore $line"; }
  done <"$SYSCTL_SAVE"
  rm -f "$SYSCTL_SAVE"
  log "restored host sysctls"
}

setup_network() {
  # Built into this VM's kernel; elsewhere they may be modules (best effort: `up` fails clearly later).
  local m
  for m in overlay bridge br_netfilter veth nf_tables; do
    [[ -d "/sys/module/$m" ]] || modprobe "$m" 2>/dev/null || true
  done
  [[ -d /proc/sys/net/bridge ]] || die "the kernel lacks br_netfilter (net.bridge.* sysctls): modprobe br_netfilter"
  # foldline0: the node's own address. A bridge without ports, because this kernel has no dummy
  # driver; its address is local all the same.
  ip link show "$NODE_IF" >/dev/null 2>&1 || ip link add "$NODE_IF" type bridge
  ip addr replace "$NODE_IP/32" dev "$NODE_IF"
  ip link set "$NODE_IF" up
  # The host's own connections to ClusterIPs: routed towards the node address (kube-proxy's output
  # DNAT then re-routes them to a pod), so they leave from NODE_IP, never from another interface.
  ip route replace "$SERVICE_CIDR" dev "$NODE_IF" src "$NODE_IP"
  sysctl -q -w net.bridge.bridge-nf-call-iptables=1 >/dev/null
  # Pods talk to each other, to Services and to the node's own addresses, nothing else: the bridge
  # plugin turns on ip_forward, and without these rules a pod's packets could be routed out of the
  # machine's other interfaces, or reach services bound to their addresses.
  nft -f - <<EOF
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$CNI_BRIDGE" oifname != "$CNI_BRIDGE" drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "$CNI_BRIDGE" meta nfproto ipv4 ip daddr != { $NODE_IP, $POD_GATEWAY } drop
  }
}
EOF
}

teardown_network() {
  local t
  ip link del "$CNI_BRIDGE" 2>/dev/null && log "removed $CNI_BRIDGE"
  ip link del "$NODE_IF" 2>/dev/null && log "removed $NODE_IF (and the service route)"
  # kube-proxy's own tables, and ours.
  for t in "ip kube-proxy" "ip6 kube-proxy" "inet $NFT_TABLE"; do
    nft delete table $t 2>/dev/null && log "removed nftables table $t"
  done
  # Tables someone created while the node ran (the kubelet's and portmap's iptables-nft chains):
  # those that did not exist before `up` go; pre-existing ones only lose their KUBE-/CNI- chains.
  if [[ -f "$NFT_TABLES_SAVE" ]]; then
    local family name
    while read -r _ family name; do
      [[ -n "$name" ]] || continue
      if grep -qx "table $family $name" "$NFT_TABLES_SAVE"; then
        drop_our_chains "$family" "$name"
      else
        nft delete table "$family" "$name" 2>/dev/null && log "removed nftables table $family $name"
      fi
    done < <(nft list tables 2>/dev/null)
    rm -f "$NFT_TABLES_SAVE"
  fi
}

drop_our_chains() {  # drop_our_chains FAMILY TABLE: rules jumping to KUBE-/CNI- chains, then the chains
  local family="$1" table="$2" chain handle
  nft -a list table "$family" "$table" 2>/dev/null | awk '
      /^\tchain / { chain = $2 }
      /(jump|goto) (KUBE-|CNI-)/ { print chain, $NF }' |
    while read -r chain handle; do
      nft delete rule "$family" "$table" "$chain" handle "$handle" 2>/dev/null || true
    done
  for chain in $(nft list table "$family" "$table" 2>/dev/null | awk '/^\tchain (KUBE-|CNI-)/ { print $2 }'); do
    nft flush chain "$family" "$table" "$chain" 2>/dev/null || true
  done
  for chain in $(nft list table "$family" "$table" 2>/dev/null | awk '/^\tchain (KUBE-|CNI-)/ { print $2 }'); do
    nft delete chain "$family" "$table" "$chain" 2>/dev/null || true
  done
}

our_mounts() {  # mount points under the node's directories, deepest first
  local prefixes=("$KUBELET_ROOT" "$CLUSTER_DIR" "$RUN_DIR" /run/containerd/io.containerd /run/netns/cni-)
  # Field 5 of mountinfo is the mount point, with spaces etc. as octal escapes.
  awk '{ print $5 }' /proc/self/mountinfo | while IFS= read -r m; do
    m="$(printf '%b' "$m")"
    local p
    for p in "${prefixes[@]}"; do
      if [[ "$m" == "$p" || "$m" == "$p"/* || ( "$p" == /run/netns/cni- && "$m" == "$p"* ) ]]; then
        echo "$m"; break
      fi
    done
  done | awk '{ print length($0) "\t" $0 }' | sort -rn | cut -f2- | uniq
}

unmount_all() {
  local m n=0 pass
  for pass in 1 2 3; do
    while IFS= read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
      n=$((n + 1))
    done < <(our_mounts)
    [[ -z "$(our_mounts)" ]] && break
  done
  ((n == 0)) || log "unmounted $n mounts"
  if [[ -n "$(our_mounts)" ]]; then
    log "still mounted:"; our_mounts >&2
    return 1
  fi
}

remove_netns() {
  # The pods' network namespaces (containerd's CRI names them cni-<uuid>); deleting one removes
  # the pod's end of its veth pair, and with it the host's end.
  local ns
  for ns in /run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
}

remove_runtime_dirs() {
  # containerd's shims and ctr leave empty directories in the fixed /run/containerd; only empty
  # ones go (Debian's own containerd, if it runs, keeps its socket there).
  local d
  for d in /run/containerd/s /run/containerd/fifo /run/containerd/runc /run/containerd; do
    [[ -d "$d" ]] && { rmdir "$d" 2>/dev/null || true; }
  done
  return 0
}

remove_cgroups() {
  # The kubelet's cgroupfs hierarchy (kubepods/...) in every v1 controller, deepest first; a
  # directory still holding a process stays (rmdir fails) and is reported.
  local root d left=0
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "$root" ]] || continue
    while IFS= read -r d; do rmdir "$d" 2>/dev/null || left=1; done < <(find "$root" -depth -type d)
  done
  ((left == 0)) || log "some kubepods cgroups still hold processes"
}

kill_runtime_leftovers() {
  # Pod processes outlive the kubelet and containerd (each runs under a containerd-shim):
  # kill every container our runc root knows, then the shims that serve our containerd socket.
  local id pid
  if [[ -d "$RUNC_ROOT" ]]; then
    for id in $(runc --root "$RUNC_ROOT/k8s.io" list -q 2>/dev/null); do
      runc --root "$RUNC_ROOT/k8s.io" kill "$id" KILL 2>/dev/null || true
    done
  fi
  local daemon; daemon="$(pid_of containerd)" || daemon=""
  # comm is cut to 15 characters: containerd-shim-runc-v2 shows as containerd-shim.
  for pid in $(pgrep -x containerd-shim 2>/dev/null) $(pgrep -x containerd 2>/dev/null); do
    [[ "$pid" == "$daemon" ]] && continue   # stopped properly by stop_service
    # Ours only: shims are told our socket (-address), a stray daemon runs our config.
    local cmdline; cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || continue
    if grep -qE -- "(-address $CONTAINERD_SOCK |--config $CONF_DIR/containerd.toml)" <<<"$cmdline"; then
      kill -KILL "$pid" 2>/dev/null && log "killed leftover $(cat "/proc/$pid/comm" 2>/dev/null || echo process) $pid"
      # A killed shim leaves its socket, /run/containerd/s/sha256(address/namespace/id).
      local ns id
      ns="$(sed -n 's/.* -namespace \([^ ]*\) .*/\1/p' <<<"$cmdline")"
      id="$(sed -n 's/.* -id \([^ ]*\) .*/\1/p' <<<"$cmdline")"
      if [[ -n "$ns" && -n "$id" ]]; then
        rm -f "/run/containerd/s/$(printf '%s' "$CONTAINERD_SOCK/$ns/$id" | sha256sum | cut -d' ' -f1)"
      fi
    fi
  done
  if [[ -d "$RUNC_ROOT" ]]; then
    for id in $(runc --root "$RUNC_ROOT/k8s.io" list -q 2>/dev/null); do
      runc --root "$RUNC_ROOT/k8s.io" delete --force "$id" 2>/dev/null || true
    done
  fi
}
