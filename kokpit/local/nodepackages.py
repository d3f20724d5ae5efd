"""The packages of a real node on a simulated host (the e2e tests' and ``kokpit demo``'s): a
private containerd and a real kubelet, installed over SSH under the host's ``$KOKPIT_ROOT`` and
removed again leaving the machine as it was found.

Each runs as a daemon of its own session (no systemd here), with everything it writes under
the root: containerd's root, state and socket, the CNI configuration and host-local IPAM
data, the kubelet's root, certificate, pod-log and static-pod directories. What cannot be under
the root is recorded before and put back after: sysctls (the bridge plugin's ``ip_forward``,
the kubelet's kernel tunables), iptables chains (``KUBE-*`` of the kubelet, ``CNI-*`` of the
bridge plugin: deleted one by one, never a table flushed), the cgroup root in every hierarchy,
the CNI bridge, ``/run/netns`` entries and the directories containerd 1.6 keeps under
``/run/containerd`` whatever its state directory is.

The kubelet joins with the bootstrap kubeconfig the Machine-Operator wrote
(``$KOKPIT_BOOTSTRAP_KUBECONFIG``) and registers with ``$KOKPIT_REGISTER_WITH_TAINTS``.
"""

from __future__ import annotations

from typing import Any

#: Shared by every step: where things are, and the helpers that record and restore.
COMMON = r"""
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
R="$KOKPIT_ROOT"
S="$R/var/lib/kokpit-node"
sock="$R/run/containerd/containerd.sock"
alive() { [ -f "$S/$1.pid" ] && kill -0 "$(cat "$S/$1.pid")" 2>/dev/null; }
stop() {
  if [ -f "$S/$1.pid" ]; then
    pid=$(cat "$S/$1.pid"); kill "$pid" 2>/dev/null || true; i=0
    while kill -0 "$pid" 2>/dev/null; do
      i=$((i + 1)); if [ "$i" -gt 100 ]; then kill -9 "$pid" 2>/dev/null || true; fi; sleep 0.1
    done
    rm -f "$S/$1.pid"
  fi
}
chains() { "$1-save" -t "$2" 2>/dev/null | sed -n 's/^:\([^ ]*\) .*/\1/p' | sort; }
record_chains() {
  for b in iptables ip6tables; do
    command -v "$b-save" >/dev/null || continue
    for t in filter nat mangle; do
      [ -f "$S/$1.$b.$t" ] || chains "$b" "$t" > "$S/$1.$b.$t"
    done
  done
}
delete_new_chains() {
  for b in iptables ip6tables; do
    command -v "$b-save" >/dev/null || continue
    for t in filter nat mangle; do
      [ -f "$S/$1.$b.$t" ] || continue
      new=$(chains "$b" "$t" | comm -13 "$S/$1.$b.$t" - | grep "^$2" || true)
      if [ -n "$new" ]; then
        {
          echo "*$t"
          "$b-save" -t "$t" | awk -v new=" $(echo $new) " '
            /^-A / {
              target = ""
              for (i = 3; i < NF; i++) if ($i == "-j" || $i == "-g") target = $(i + 1)
              if (index(new, " " $2 " ") == 0 && target != "" && index(new, " " target " ") > 0) {
                sub(/^-A /, "-D "); print
              }
            }'
          for c in $new; do echo "-F $c"; done
          for c in $new; do echo "-X $c"; done
          echo COMMIT
        } | "$b-restore" --noflush
      fi
      rm -f "$S/$1.$b.$t"
    done
  done
}
umount_under() {
  for _ in 1 2 3; do
    awk -v r="$1/" 'index($2, r) == 1 { print $2 }' /proc/mounts | tac | while read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
}
cgroup_hierarchies() { awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/mounts; }
running_tasks() {
  ctr --address "$sock" -n k8s.io tasks ls 2>/dev/null \
    | awk 'NR > 1 && $3 == "RUNNING" { print $1 }'
}
"""

CONTAINERD_CHECK = (
    COMMON
    + r"""
if alive containerd && [ -S "$sock" ]; then cat "$S/containerd.version"; fi
"""
)

CONTAINERD_INSTALL = (
    COMMON
    + r"""
mkdir -p "$S" "$R/etc/containerd" "$R/etc/cni/net.d" "$R/var/lib/cni/networks" "$R/var/log"
[ -f "$S/ip_forward" ] || cat /proc/sys/net/ipv4/ip_forward > "$S/ip_forward"
if [ ! -f "$S/run-dirs" ]; then
  for d in /run/netns /run/containerd /run/containerd/s /run/containerd/runc; do
    if [ -e "$d" ]; then echo "$d"; fi
  done > "$S/run-dirs"
  ls /run/netns 2>/dev/null > "$S/netns" || true
fi
record_chains containerd-chains
cat > "$R/etc/containerd/config.toml" <<EOF
version = 2
root = "$R/var/lib/containerd"
state = "$R/run/containerd"
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$R/opt/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$KOKPIT_CONFIG_SANDBOX_IMAGE"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$R/etc/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
cat > "$R/etc/cni/net.d/10-kokpit.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "kokpit-host", "plugins": [{"type": "bridge",
 "bridge": "$KOKPIT_CONFIG_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
 "ipam": {"type": "host-local", "ranges": [[{"subnet": "$KOKPIT_CONFIG_SUBNET"}]],
 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$R/var/lib/cni/networks"}}]}
EOF
if ! alive containerd; then
  setsid containerd --config "$R/etc/containerd/config.toml" \
    > "$R/var/log/containerd.log" 2>&1 < /dev/null &
  echo $! > "$S/containerd.pid"
fi
i=0
until ctr --address "$sock" version > /dev/null 2>&1; do
  i=$((i + 1))
  if [ "$i" -gt 100 ]; then tail -20 "$R/var/log/containerd.log" >&2; exit 1; fi
  sleep 0.1
done
for archive in $KOKPIT_CONFIG_IMAGES; do
  ctr --address "$sock" -n k8s.io images import "$archive" > /dev/null
done
echo "$KOKPIT_VERSION" > "$S/containerd.version"
"""
)

CONTAINERD_REMOVE = (
    COMMON
    + r"""
if alive containerd; then
  for id in $(running_tasks); do
    ctr --address "$sock" -n k8s.io tasks kill -s KILL "$id" 2>/dev/null || true
  done
fi
stop containerd
# Its shims (each names this containerd's socket), by pid.
for d in /proc/[0-9]*; do
  if tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -qF -- "-address $sock "; then
    kill -9 "${d#/proc/}" 2>/dev/null || true
  fi
done
umount_under "$R"
if [ -f "$S/netns" ]; then
  for n in $(ls /run/netns 2>/dev/null | grep '^cni-' || true); do
    if ! grep -qx -- "$n" "$S/netns"; then
      umount "/run/netns/$n" 2>/dev/null || true; rm -f -- "/run/netns/$n"
    fi
  done
fi
if ip link show "$KOKPIT_CONFIG_BRIDGE" > /dev/null 2>&1; then
  ip link delete "$KOKPIT_CONFIG_BRIDGE"
fi
delete_new_chains containerd-chains CNI-
if [ -f "$S/ip_forward" ]; then
  v=$(cat "$S/ip_forward")
  [ "$(cat /proc/sys/net/ipv4/ip_forward)" = "$v" ] || echo "$v" > /proc/sys/net/ipv4/ip_forward
fi
if [ -f "$S/run-dirs" ]; then
  for d in /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/s /run/containerd \
      /run/netns; do
    if [ -d "$d" ] && ! grep -qx -- "$d" "$S/run-dirs"; then rmdir -- "$d" 2>/dev/null || true; fi
  done
fi
rm -rf -- "$R/var/lib/containerd" "$R/run/containerd" "$R/opt/containerd" "$R/etc/containerd" \
  "$R/etc/cni" "$R/var/lib/cni"
rm -f -- "$S/containerd.version" "$S/ip_forward" "$S/run-dirs" "$S/netns"
"""
)

KUBELET_CHECK = (
    COMMON
    + r"""
if alive kubelet; then cat "$S/kubelet.version"; fi
"""
)

TUNABLES = (
    "vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops "
    "kernel/keys/root_maxkeys kernel/keys/root_maxbytes"
)

KUBELET_INSTALL = (
    COMMON
    + f'tunables="{TUNABLES}"\n'
    + r"""
if [ ! -s "$R$KOKPIT_BOOTSTRAP_KUBECONFIG" ]; then
  echo "no bootstrap kubeconfig at $KOKPIT_BOOTSTRAP_KUBECONFIG" >&2; exit 1
fi
mkdir -p "$S" "$R/usr/local/bin" "$R/etc/kubernetes/manifests" "$R/var/lib/kubelet/pki" \
  "$R/var/log/pods" "$R/usr/libexec/kubelet-plugins"
install -m 0755 "$KOKPIT_CONFIG_BINARY" "$R/usr/local/bin/kubelet"
if [ ! -f "$S/sysctls" ]; then
  for k in $tunables; do echo "$k $(cat "/proc/sys/$k")"; done > "$S/sysctls"
fi
if [ ! -f "$S/log-dir" ]; then
  if [ -d /var/log/containers ]; then echo yes > "$S/log-dir"; else echo no > "$S/log-dir"; fi
fi
record_chains kubelet-chains
for h in $(cgroup_hierarchies); do mkdir -p "$h$KOKPIT_CONFIG_CGROUP_ROOT"; done
cat > "$R/etc/kubernetes/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: $KOKPIT_CONFIG_CGROUP_ROOT
address: $KOKPIT_NODE_IP
port: $KOKPIT_CONFIG_PORT
healthzBindAddress: 127.0.0.1
healthzPort: $KOKPIT_CONFIG_HEALTHZ_PORT
readOnlyPort: 0
failSwapOn: false
containerRuntimeEndpoint: unix://$sock
podLogsDir: $R/var/log/pods
staticPodPath: $R/etc/kubernetes/manifests
volumePluginDir: $R/usr/libexec/kubelet-plugins
rotateCertificates: true
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
authorization:
  mode: Webhook
evictionHard: {memory.available: "50Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 16
EOF
if ! alive kubelet; then
  date +%s.%N > "$S/kubelet.started"
  set -- --config="$R/etc/kubernetes/kubelet.yaml" \
    --bootstrap-kubeconfig="$R$KOKPIT_BOOTSTRAP_KUBECONFIG" \
    --kubeconfig="$R/etc/kubernetes/kubelet.conf" \
    --cert-dir="$R/var/lib/kubelet/pki" --root-dir="$R/var/lib/kubelet" \
    --hostname-override="$KOKPIT_NODE_NAME" --node-ip="$KOKPIT_NODE_IP"
  if [ -n "$KOKPIT_REGISTER_WITH_TAINTS" ]; then
    set -- "$@" --register-with-taints="$KOKPIT_REGISTER_WITH_TAINTS"
  fi
  setsid "$R/usr/local/bin/kubelet" "$@" > "$R/var/log/kubelet.log" 2>&1 < /dev/null &
  echo $! > "$S/kubelet.pid"
  sleep 1
  if ! alive kubelet; then tail -30 "$R/var/log/kubelet.log" >&2; exit 1; fi
fi
echo "$KOKPIT_VERSION" > "$S/kubelet.version"
"""
)

KUBELET_REMOVE = (
    COMMON
    + r"""
# The drain evicted the pods: give the kubelet time to stop their containers.
i=0
while [ -S "$sock" ] && [ -n "$(running_tasks)" ] && [ "$i" -lt 150 ]; do
  i=$((i + 1)); sleep 0.2
done
stop kubelet
if [ -S "$sock" ]; then
  for id in $(running_tasks); do
    ctr --address "$sock" -n k8s.io tasks kill -s KILL "$id" 2>/dev/null || true
  done
fi
umount_under "$R/var/lib/kubelet"
if [ -n "$KOKPIT_CONFIG_CGROUP_ROOT" ]; then
  for h in $(cgroup_hierarchies); do
    top="$h$KOKPIT_CONFIG_CGROUP_ROOT"
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [ -d "$top" ] || break
      find "$top" -depth -type d -exec rmdir {} \; 2>/dev/null || sleep 0.5
    done
    if [ -d "$top" ]; then echo "cannot remove cgroup $top" >&2; exit 1; fi
  done
fi
if [ -d /var/log/containers ]; then
  find /var/log/containers -maxdepth 1 -type l -lname "$R/*" -delete
  if [ "$(cat "$S/log-dir" 2>/dev/null)" = no ]; then
    rmdir /var/log/containers 2>/dev/null || true
  fi
fi
if [ -f "$S/sysctls" ]; then
  while read -r k v; do
    [ "$(cat "/proc/sys/$k")" = "$v" ] || echo "$v" > "/proc/sys/$k"
  done < "$S/sysctls"
fi
delete_new_chains kubelet-chains KUBE-
rm -rf -- "$R/var/lib/kubelet" "$R/var/log/pods" "$R/etc/kubernetes" "$R/usr/local/bin/kubelet" \
  "$R/usr/libexec/kubelet-plugins"
rm -f -- "$S/kubelet.version" "$S/kubelet.started" "$S/sysctls" "$S/log-dir"
"""
)


def containerd(*, images: list[str], sandbox_image: str, bridge: str, subnet: str) -> Any:
    return {
        "name": "containerd",
        "kind": "ContainerRuntime",
        "version": "1.6.20",
        "config": {
            "images": " ".join(images),
            "sandbox-image": sandbox_image,
            "bridge": bridge,
            "subnet": subnet,
        },
        "install": {
            "script": {
                "check": {"run": CONTAINERD_CHECK},
                "install": {"run": CONTAINERD_INSTALL, "timeoutSeconds": 120},
                "remove": {"run": CONTAINERD_REMOVE, "timeoutSeconds": 120},
            }
        },
    }


def kubelet(*, version: str, binary: str, cgroup_root: str, port: int, healthz_port: int) -> Any:
    return {
        "name": "kubelet",
        "kind": "Kubelet",
        "version": version,
        "config": {
            "binary": binary,
            "cgroup-root": cgroup_root,
            "port": str(port),
            "healthz-port": str(healthz_port),
        },
        "install": {
            "script": {
                "check": {"run": KUBELET_CHECK},
                "install": {"run": KUBELET_INSTALL, "timeoutSeconds": 120},
                "remove": {"run": KUBELET_REMOVE, "timeoutSeconds": 120},
            }
        },
    }
