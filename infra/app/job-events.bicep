// Job-finished events: an Event Grid custom topic that takes CloudEvents 1.0. When a job reaches a terminal
// state the app publishes one event (type GeoCatalogIngest.JobFinished, subject the job id) to the endpoint in
// JOB_EVENTS_TOPIC_ENDPOINT, as its own identity: local (key and SAS) auth is off, and the app holds only
// EventGrid Data Sender on this topic (rbac.bicep).
//
// Nothing subscribes here: whoever wants the events adds a subscription (docs/events.md). For example,
// delivery to a storage queue as the topic's own identity, no key anywhere:
//
//   resource jobFinishedToQueue 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = {
//     parent: topic
//     name: 'jobs-finished-to-queue'
//     properties: {
//       eventDeliverySchema: 'CloudEventSchemaV1_0'
//       deliveryWithResourceIdentity: {
//         identity: { type: 'SystemAssigned' }
//         destination: {
//           endpointType: 'StorageQueue'
//           properties: { resourceId: <storage account id>, queueName: 'jobs-finished', queueMessageTimeToLiveInSeconds: -1 }
//         }
//       }
//       filter: { includedEventTypes: [ 'GeoCatalogIngest.JobFinished' ] }
//     }
//   }
//
// with the topic's identity (output principalId) given Storage Queue Data Message Sender on that queue first.

@description('Custom topic name.')
param topicName string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' = {
  // checkov:skip=CKV_AZURE_193: the Flex Consumption app has no VNet in this template and publishes over the public endpoint; only Entra ID callers with EventGrid Data Sender get in (local auth is off)
  name: topicName
  location: location
  tags: tags
  // The topic's own identity: what a subscription delivers with (deliveryWithResourceIdentity), so no
  // destination key or SAS is ever needed.
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
    minimumTlsVersionAllowed: '1.2'
  }
}

output name string = topic.name
output id string = topic.id
output endpoint string = topic.properties.endpoint
output principalId string = topic.identity.principalId
