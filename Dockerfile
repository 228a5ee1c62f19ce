# syntax=docker/dockerfile:1
#
# One image, both binaries (DESIGN.md §2):
#   voice-agent-operator   the operator; the chart runs `voice-agent-operator run`
#                          (it sets `command:`, so the entrypoint below does not matter)
#   voice-agent            the components: gateway, runtime, agent, tts, metrics
#
# ENTRYPOINT is `voice-agent` because the Deployments the operator renders for a
# VoiceAgent set only `args: [<component>]`: the pod runs `voice-agent gateway`,
# `voice-agent runtime`, ... With no arguments the image lists what it can run
# (`voice-agent components`).
#
#   docker build -t ghcr.io/voice-agent-operator/voice-agent:0.1.0 .
#   docker run --rm ghcr.io/voice-agent-operator/voice-agent:0.1.0 metrics
#   docker run --rm --entrypoint voice-agent-operator ghcr.io/voice-agent-operator/voice-agent:0.1.0 crd

FROM rust:1-bookworm AS builder
WORKDIR /src
COPY . .
# The binaries are copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p voice-agent-operator -p voice-agent \
 && install -D -m 0755 target/release/voice-agent-operator /out/voice-agent-operator \
 && install -D -m 0755 target/release/voice-agent /out/voice-agent

# Runtime: Debian slim rather than distroless, because the `local` TTS
# provider runs the espeak-ng executable (not just its library): it needs
# libespeak-ng1, libpcaudio0, libsonic0 and the voice data in
# /usr/lib/<arch>-linux-gnu/espeak-ng-data, which apt installs consistently
# for every architecture. The `local` STT provider dlopen()s PocketSphinx
# (libpocketsphinx3) and reads its US English model (pocketsphinx-en-us).
# Unpinned on purpose: Debian point releases carry the
# security fixes; rebuild to pick them up.
FROM debian:bookworm-slim
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates espeak-ng \
      libpocketsphinx3 pocketsphinx-en-us \
 && rm -rf /var/lib/apt/lists/* \
 && espeak-ng --version
COPY --from=builder /out/voice-agent-operator /out/voice-agent /usr/local/bin/
# Non-root, the UID the chart and the operator's pods run as (runAsUser 65532);
# the root filesystem is mounted read-only, /tmp is an emptyDir.
USER 65532:65532
ENV LOG_FORMAT=json \
    VOICE_AGENT_LOG_FORMAT=json
EXPOSE 8080 9090
ENTRYPOINT ["voice-agent"]
CMD ["components"]
