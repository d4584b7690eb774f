# syntax=docker/dockerfile:1
#
# Builds the operator as one self-contained executable with `deno task compile`, which carries the Deno permission
# flags (deno.json is their single source), and ships it on a distroless base: the compiled binary needs glibc and
# libgcc, nothing else. Build for another architecture with `docker buildx build --platform ...`; `deno compile`
# targets the platform it runs on.

FROM denoland/deno:2.9.6 AS build
WORKDIR /src
# Dependencies first, in their own layer, so a source change does not download them again.
COPY deno.json deno.lock ./
RUN deno install --frozen
COPY main.ts ./
COPY src/ ./src/
RUN deno task compile

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/dist/gitea-runner-operator /gitea-runner-operator
USER 65532:65532
# Health and readiness (`--health-port`, GRO_HEALTH_PORT).
EXPOSE 8081
ENTRYPOINT ["/gitea-runner-operator"]
CMD ["run"]
