#!/usr/bin/env bash
# Writes the supply-chain evidence bundle, target/evidence/ (issue 8; how an
# operator checks each item: deploy/EVIDENCE.md):
#
#   images.txt                 the images' digests and their binaries' sha256s
#                              (deploy/container/build's output; the build runs
#                              when it is missing, for another profile, or stale)
#   binaries.txt               <binary> <sha256 in the image> <sha256 as built> <image>
#   sbom/<binary>.cdx.json     CycloneDX 1.5 SBOM per binary (cargo-cyclonedx,
#                              pinned, installed into target/tools), and sbom/SHA256SUMS
#   charts/*.tgz               the packaged Helm charts (Helm v4 engine,
#                              deploy/helm/chart_tool.py), and charts/SHA256SUMS
#   attestations/              per binary and image: <binary>.sbom.dsse.json
#                              (predicate https://cyclonedx.org/bom) and
#                              <binary>.provenance.dsse.json (SLSA provenance v1:
#                              source commit, build command), in-toto Statements
#                              in DSSE envelopes signed by signer-svc's manifest
#                              key (SignManifest over mutual TLS), the statements
#                              themselves, and manifest-key.pem
#   e2e/                       from target/e2e/ when the integration run left
#                              them: a signed checkpoint sample with the DSSE
#                              manifest listing it (and the e2e manifest key's
#                              public half), the end-to-end logs, a metrics
#                              scrape sample, cargo-test.log
#   MISSING.txt                what could not be included, and why
#   timings.txt                each step's wall time
#   index.json                 every file above with its sha256 and size
#
# Environment:
#   PROFILE   cargo profile of the binaries and images (default release; CI
#             uses debug, the binaries `cargo test` built)
#   EVIDENCE_SIGNER_ENDPOINT, EVIDENCE_SIGNER_CA, EVIDENCE_SIGNER_CERT,
#   EVIDENCE_SIGNER_KEY [, EVIDENCE_SIGNER_SERVER_NAME]
#             sign through this existing signer-svc (its manifest key). Without
#             them a development signer is started for the run, with the
#             development stack's material in target/evidence-signer/ (kept, so
#             its key is stable across runs; never part of the bundle).
#
# Exits non-zero if any step fails, including the bundle's own check of every
# attestation with `rekor-witness verify dsse`.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
profile="${PROFILE:-release}"
bin_dir="$repo/target/$profile"
out="$repo/target/evidence"
signer_dir="$repo/target/evidence-signer"
tools="$repo/target/tools"
cyclonedx_version=0.5.9

# binary | cargo package | image name
binaries=(
  "signer-svc|signer-svc|signer-svc"
  "rekor-witness|witness-core|witness-core"
  "rekor-witness-gateway|gateway|gateway"
)

timings=()
step_start=0
step() {
  step_start=$(date +%s%N)
  echo "== deploy/evidence.sh: $1"
}
step_done() {
  local ms=$(( ($(date +%s%N) - step_start) / 1000000 ))
  timings+=("$1 $ms ms")
  echo "   $1: $ms ms"
}
missing=()
total_start=$(date +%s%N)

revision="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
if [ "$revision" = unknown ]; then
  source_tree=unknown
elif [ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]; then
  source_tree=clean
else
  source_tree=modified
fi
cargo_profile_flag="$([ "$profile" = release ] && echo --release || { [ "$profile" = debug ] || echo "--profile $profile"; })"

# The bundle is written whole on every run: nothing stale survives, except
# images.txt, which deploy/container/build writes here.
mkdir -p "$out"
find "$out" -mindepth 1 -maxdepth 1 ! -name images.txt -exec rm -rf {} +
mkdir -p "$out/sbom" "$out/charts" "$out/attestations/statements" "$out/e2e"

# --- 1. binaries and images -------------------------------------------------
step "binaries and images ($profile)"
# Built when missing. Not rebuilt otherwise: CI's debug binaries are the ones
# `cargo test --workspace` built (its feature set), and a `cargo build` here
# could rebuild them under other tests. Run `cargo build --release --bins`
# first for release evidence of the current checkout.
for entry in "${binaries[@]}"; do
  IFS='|' read -r binary package _ <<<"$entry"
  if [ ! -x "$bin_dir/$binary" ]; then
    # shellcheck disable=SC2086
    cargo build $cargo_profile_flag -p "$package" --bins
  fi
done
# images.txt is current when it names this profile's three images, each
# staged binary (the copy in the image) still has the recorded sha256, and that
# copy is the binary cargo built now (as is, or with its debug sections
# stripped as deploy/container/build does by default).
images_current() {
  [ -f "$out/images.txt" ] || return 1
  local entry binary image line recorded staged
  for entry in "${binaries[@]}"; do
    IFS='|' read -r binary _ image <<<"$entry"
    line="$(grep "^rekor-witness/$image:" "$out/images.txt" || true)"
    [ -n "$line" ] || return 1
    [ "$(cut -d' ' -f5 <<<"$line")" = "$profile" ] || return 1
    recorded="$(cut -d' ' -f4 <<<"$line")"
    [ -f "$repo/target/container/$profile/$image/usr/local/bin/$binary" ] || return 1
    [ "$(sha256sum "$repo/target/container/$profile/$image/usr/local/bin/$binary" | cut -d' ' -f1)" = "$recorded" ] || return 1
    podman image exists "$(cut -d' ' -f1 <<<"$line")" 2>/dev/null || return 1
    staged="$(mktemp)"
    objcopy --strip-debug "$bin_dir/$binary" "$staged"
    if [ "$(sha256sum "$staged" | cut -d' ' -f1)" != "$recorded" ] \
      && [ "$(sha256sum "$bin_dir/$binary" | cut -d' ' -f1)" != "$recorded" ]; then
      rm -f "$staged"
      return 1
    fi
    rm -f "$staged"
  done
}
if ! images_current; then
  PROFILE="$profile" "$repo/deploy/container/build"
  images_current || { echo "deploy/evidence.sh: images.txt does not match the staged binaries" >&2; exit 1; }
fi
: >"$out/binaries.txt"
for entry in "${binaries[@]}"; do
  IFS='|' read -r binary _ image <<<"$entry"
  line="$(grep "^rekor-witness/$image:" "$out/images.txt")"
  printf '%s %s %s %s\n' "$binary" "$(cut -d' ' -f4 <<<"$line")" \
    "$(sha256sum "$bin_dir/$binary" | cut -d' ' -f1)" "$(cut -d' ' -f1 <<<"$line")" >>"$out/binaries.txt"
done
step_done images

# --- 2. SBOMs -----------------------------------------------------------------
step "cargo-cyclonedx $cyclonedx_version"
if [ "$("$tools/bin/cargo-cyclonedx" cyclonedx --version 2>/dev/null | awk '{print $NF}')" != "$cyclonedx_version" ]; then
  cargo install cargo-cyclonedx --locked --version "$cyclonedx_version" --root "$tools"
fi
step_done cyclonedx-install

step "CycloneDX 1.5 SBOMs"
# `--describe binaries`: one SBOM per binary target of the workspace, each
# written beside its package's Cargo.toml as <binary>_bin.cdx.json (the tool
# has no output directory; --override-filename excludes --describe), and moved
# into the bundle at once.
PATH="$tools/bin:$PATH" cargo cyclonedx --manifest-path "$repo/Cargo.toml" \
  --format json --spec-version 1.5 --describe binaries >/dev/null
for entry in "${binaries[@]}"; do
  IFS='|' read -r binary package _ <<<"$entry"
  produced="$repo/$package/${binary}_bin.cdx.json"
  if [ ! -f "$produced" ]; then
    echo "deploy/evidence.sh: cargo-cyclonedx wrote no $produced" >&2
    exit 1
  fi
  mv "$produced" "$out/sbom/$binary.cdx.json"
done
(cd "$out/sbom" && sha256sum ./*.cdx.json | sed 's# \./# #' >SHA256SUMS)
step_done sbom

# --- 3. charts ----------------------------------------------------------------
step "Helm charts"
py_deploy="$("$repo/scripts/python-env" deploy)"
for chart in rekor-witness rekor-witness-signer; do
  "$py_deploy" "$repo/deploy/helm/chart_tool.py" package "$repo/deploy/helm/$chart" --out "$out/charts" >/dev/null
done
(cd "$out/charts" && sha256sum ./*.tgz | sed 's# \./# #' >SHA256SUMS)
step_done charts

# --- 4. attestations ----------------------------------------------------------
step "in-toto statements"
started_on="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
python3 - "$out" "$profile" "$revision" "$source_tree" "$started_on" "$(rustc -V)" \
  "$(sha256sum Cargo.lock | cut -d' ' -f1)" "$cargo_profile_flag" "${binaries[@]}" <<'PY'
import json, sys
out, profile, revision, tree, started, rustc, lock_sha, profile_flag = sys.argv[1:9]
entries = [e.split("|") for e in sys.argv[9:]]
images = {}
for line in open(f"{out}/binaries.txt"):
    binary, image_sha, built_sha, ref = line.split()
    images[binary] = (image_sha, built_sha, ref)
digests = {l.split()[0]: l.split()[1] for l in open(f"{out}/images.txt")}
for binary, package, image in entries:
    image_sha, built_sha, ref = images[binary]
    manifest_digest = digests[ref]
    subjects = [
        {"name": binary, "digest": {"sha256": image_sha}},
        {"name": ref, "digest": {"sha256": manifest_digest.removeprefix("sha256:")}},
    ]
    def statement(predicate_type, predicate):
        return {"_type": "https://in-toto.io/Statement/v1", "subject": subjects,
                "predicateType": predicate_type, "predicate": predicate}
    sbom = json.load(open(f"{out}/sbom/{binary}.cdx.json"))
    command = f"cargo build --locked {profile_flag} -p {package} --bin {binary}".replace("  ", " ")
    provenance = {
        "buildDefinition": {
            "buildType": "https://rekor-witness.dev/evidence/cargo-podman/v1",
            "externalParameters": {
                "source": {"uri": "git+rekor-witness", "digest": {"gitCommit": revision}},
                "buildCommand": [command, f"PROFILE={profile} deploy/container/build"],
                "profile": profile,
                "package": package,
                "binary": binary,
                "image": ref,
            },
            "internalParameters": {"sourceTree": tree, "rustToolchain": rustc},
            "resolvedDependencies": [
                {"uri": "git+rekor-witness", "digest": {"gitCommit": revision}},
                {"name": "Cargo.lock", "digest": {"sha256": lock_sha}},
                {"name": f"target/{profile}/{binary}", "digest": {"sha256": built_sha}},
            ],
        },
        "runDetails": {
            "builder": {"id": "https://rekor-witness.dev/evidence/deploy-evidence-sh/v1"},
            "metadata": {"invocationId": f"deploy/evidence.sh@{started}", "startedOn": started},
        },
    }
    for kind, predicate_type, predicate in [
        ("sbom", "https://cyclonedx.org/bom", sbom),
        ("provenance", "https://slsa.dev/provenance/v1", provenance),
    ]:
        with open(f"{out}/attestations/statements/{binary}.{kind}.statement.json", "w") as f:
            json.dump(statement(predicate_type, predicate), f, sort_keys=True)
PY
step_done statements

step "signing through signer-svc's manifest key"
signer_args=()
if [ -n "${EVIDENCE_SIGNER_ENDPOINT:-}" ]; then
  signer_args=(--signer-endpoint "$EVIDENCE_SIGNER_ENDPOINT" --signer-ca "${EVIDENCE_SIGNER_CA:?}"
    --signer-cert "${EVIDENCE_SIGNER_CERT:?}" --signer-key "${EVIDENCE_SIGNER_KEY:?}")
  [ -z "${EVIDENCE_SIGNER_SERVER_NAME:-}" ] || signer_args+=(--signer-server-name "$EVIDENCE_SIGNER_SERVER_NAME")
else
  signer_args=(--dev-dir "$signer_dir" --signer-svc "$bin_dir/signer-svc")
fi
"$bin_dir/rekor-witness" evidence sign --out-dir "$out/attestations" "${signer_args[@]}" \
  "$out"/attestations/statements/*.statement.json >/dev/null
cp "$out/attestations/manifest-key.pem" "$out/manifest-key.pem"
step_done sign

step "rekor-witness verify dsse on every attestation"
for entry in "${binaries[@]}"; do
  IFS='|' read -r binary _ image <<<"$entry"
  for kind in sbom:https://cyclonedx.org/bom provenance:https://slsa.dev/provenance/v1; do
    "$bin_dir/rekor-witness" verify dsse --key "$out/manifest-key.pem" --type "${kind#*:}" \
      --subject "$repo/target/container/$profile/$image/usr/local/bin/$binary" \
      "$out/attestations/$binary.${kind%%:*}.dsse.json"
  done
done
step_done verify

# --- 5. the integration run's artifacts ---------------------------------------
step "end-to-end artifacts"
e2e="$repo/target/e2e"
if [ -d "$e2e/rekor_v2/stack/archive/manifests" ]; then
  mkdir -p "$out/e2e/rekor_v2/archive"
  cp -r "$e2e/rekor_v2/stack/archive/manifests" "$e2e/rekor_v2/stack/archive/checkpoints" \
    "$out/e2e/rekor_v2/archive/"
  # The public half of the e2e stack's manifest key (its private key stays).
  if [ -f "$e2e/rekor_v2/stack/keys/manifest-p256.pem" ] && command -v openssl >/dev/null 2>&1; then
    openssl pkey -in "$e2e/rekor_v2/stack/keys/manifest-p256.pem" -pubout \
      -out "$out/e2e/rekor_v2/archive/manifest-key.pem"
    for manifest in "$out"/e2e/rekor_v2/archive/manifests/*.dsse.json; do
      "$bin_dir/rekor-witness" verify dsse --key "$out/e2e/rekor_v2/archive/manifest-key.pem" \
        --type https://rekor-witness.dev/checkpoint-archive/v1 "$manifest" >/dev/null
    done
  else
    missing+=("e2e/rekor_v2/archive/manifest-key.pem: the e2e stack's manifest key is gone, or no openssl to take its public half")
  fi
else
  missing+=("e2e/rekor_v2/archive: no signed checkpoint archive (run the rekor_v2 integration test)")
fi
for file in cosigned-checkpoints.txt metrics-sample.txt; do
  if [ -f "$e2e/rekor_v2/$file" ]; then
    cp "$e2e/rekor_v2/$file" "$out/e2e/rekor_v2/$file"
  else
    missing+=("e2e/rekor_v2/$file: not written (run the rekor_v2 integration test)")
  fi
done
found_logs=0
while IFS= read -r log; do
  rel="${log#"$e2e"/}"
  mkdir -p "$out/e2e/logs/$(dirname "$rel")"
  cp "$log" "$out/e2e/logs/$rel"
  found_logs=$((found_logs + 1))
done < <(find "$e2e" -maxdepth 2 -name '*.log' -type f -size -64M 2>/dev/null | sort)
[ "$found_logs" -gt 0 ] || missing+=("e2e/logs: no end-to-end logs in target/e2e")
[ -f "$e2e/cargo-test.log" ] || missing+=("e2e/logs/cargo-test.log: the whole test output is written by scripts/test only")
step_done e2e

# --- 6. index -----------------------------------------------------------------
if [ "${#missing[@]}" -gt 0 ]; then
  printf '%s\n' "${missing[@]}" >"$out/MISSING.txt"
  printf 'deploy/evidence.sh: missing: %s\n' "${missing[@]}" >&2
fi
timings+=("total $(( ($(date +%s%N) - total_start) / 1000000 )) ms")
printf '%s\n' "${timings[@]}" >"$out/timings.txt"
python3 - "$out" "$revision" "$source_tree" "$profile" "$cyclonedx_version" <<'PY'
import hashlib, json, os, sys
out, revision, tree, profile, cyclonedx = sys.argv[1:6]
files = []
for root, _, names in os.walk(out):
    for name in names:
        path = os.path.join(root, name)
        rel = os.path.relpath(path, out)
        if rel == "index.json":
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        files.append({"path": rel, "sha256": digest.hexdigest(), "size": os.path.getsize(path)})
files.sort(key=lambda f: f["path"])
images = []
for line in open(f"{out}/images.txt"):
    ref, digest, image_id, binary_sha, prof = line.split()
    images.append({"ref": ref, "digest": digest, "id": image_id,
                   "binary_sha256": binary_sha, "profile": prof})
missing = open(f"{out}/MISSING.txt").read().splitlines() if os.path.exists(f"{out}/MISSING.txt") else []
index = {"source_commit": revision, "source_tree": tree, "profile": profile,
         "cargo_cyclonedx": cyclonedx, "images": images, "missing": missing, "files": files}
with open(f"{out}/index.json", "w") as f:
    json.dump(index, f, indent=1, sort_keys=True)
print(f"deploy/evidence.sh: {len(files)} files indexed in {out}/index.json")
PY
cat "$out/timings.txt"
