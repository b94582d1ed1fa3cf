//! A gRPC server-reflection client speaking either protocol version, as
//! tools such as grpcurl do: which services a process lists, and which
//! proto files it returns for a symbol.

use anyhow::Context;
use prost::Message;
use std::collections::BTreeSet;
use tonic::transport::Channel;

/// The reflection protocol version asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V1Alpha,
}

/// One reflection question.
enum Ask {
    ListServices,
    FileContainingSymbol(String),
}

/// One reflection answer; a refused question is a `tonic::Status`.
enum Answer {
    Services(BTreeSet<String>),
    Files(Vec<String>),
}

/// One question asked over `grpc.reflection.<version>` (the two versions
/// have the same messages in different packages).
macro_rules! ask_version {
    ($name:ident, $pb:path) => {
        async fn $name(
            channel: Channel,
            ask: Ask,
        ) -> anyhow::Result<Result<Answer, tonic::Status>> {
            use pb::server_reflection_request::MessageRequest;
            use pb::server_reflection_response::MessageResponse;
            use $pb as pb;
            let request = pb::ServerReflectionRequest {
                host: String::new(),
                message_request: Some(match ask {
                    Ask::ListServices => MessageRequest::ListServices(String::new()),
                    Ask::FileContainingSymbol(s) => MessageRequest::FileContainingSymbol(s),
                }),
            };
            let mut client = pb::server_reflection_client::ServerReflectionClient::new(channel);
            let answers = client
                .server_reflection_info(tokio_stream::once(request))
                .await;
            let answer = match answers {
                Ok(answers) => answers.into_inner().message().await,
                Err(status) => Err(status),
            };
            let response = match answer {
                Ok(response) => response.context("no reflection answer")?,
                Err(status) => return Ok(Err(status)),
            };
            Ok(Ok(
                match response.message_response.context("empty answer")? {
                    MessageResponse::ListServicesResponse(list) => {
                        Answer::Services(list.service.into_iter().map(|s| s.name).collect())
                    }
                    MessageResponse::FileDescriptorResponse(files) => Answer::Files(
                        files
                            .file_descriptor_proto
                            .iter()
                            .map(|f| prost_types::FileDescriptorProto::decode(f.as_slice()))
                            .map(|f| f.map(|f| f.name().to_owned()))
                            .collect::<Result<_, _>>()?,
                    ),
                    _ => anyhow::bail!("unexpected reflection answer"),
                },
            ))
        }
    };
}

ask_version!(ask_v1, tonic_reflection::pb::v1);
ask_version!(ask_v1alpha, tonic_reflection::pb::v1alpha);

async fn ask(
    url: &str,
    version: Version,
    ask: Ask,
) -> anyhow::Result<Result<Answer, tonic::Status>> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
        .connect()
        .await?;
    match version {
        Version::V1 => ask_v1(channel, ask).await,
        Version::V1Alpha => ask_v1alpha(channel, ask).await,
    }
}

/// The services the process at `url` lists.
pub async fn services(url: &str, version: Version) -> anyhow::Result<BTreeSet<String>> {
    match ask(url, version, Ask::ListServices).await?? {
        Answer::Services(services) => Ok(services),
        Answer::Files(_) => anyhow::bail!("files answered to a service list"),
    }
}

/// The names of the files the process at `url` returns for `symbol`, or
/// the status it refuses the question with (NOT_FOUND for an unknown one).
pub async fn files_containing(
    url: &str,
    version: Version,
    symbol: &str,
) -> anyhow::Result<Result<Vec<String>, tonic::Status>> {
    Ok(
        match ask(url, version, Ask::FileContainingSymbol(symbol.to_owned())).await? {
            Ok(Answer::Files(files)) => Ok(files),
            Ok(Answer::Services(_)) => anyhow::bail!("a service list answered to a symbol"),
            Err(status) => Err(status),
        },
    )
}
