// Uploads start jobs: an Event Grid system topic on the storage account delivers the drop container's
// BlobCreated events to the drop-events queue, authenticating as the topic's own identity (no SAS, no key).
// An event it cannot deliver within the retry policy is written, as the same identity, to a dead-letter
// container instead of being dropped.
// Only one system topic may exist per storage account: if one already does (e.g. Defender for Storage made it),
// create the subscription on that topic instead (docs/uploads.md, "The trigger in Azure").

@description('System topic name.')
param topicName string

@description('Azure region (the storage account\'s).')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Storage account whose events the topic publishes (it holds the drop container and the queue).')
param storageAccountName string

@description('Container whose uploads start jobs (DROP_CONTAINER).')
param dropContainerName string

@description('Queue the events are delivered to (DROP_EVENTS_QUEUE).')
param dropEventsQueueName string

@description('Container the events that could not be delivered are written to (one blob per undelivered event batch).')
param deadLetterContainerName string

// Storage Queue Data Message Sender: add messages, nothing else.
var queueMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
// Storage Blob Data Contributor: what dead-lettering needs to write its blobs.
var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource dropEventsQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: dropEventsQueueName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: deadLetterContainerName
}

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: topicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Scoped to the one queue: the topic can add messages there and nowhere else.
resource topicSender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dropEventsQueue.id, topic.id, queueMessageSender)
  scope: dropEventsQueue
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageSender)
  }
}

// Scoped to the one container: the topic can write dead letters there and nowhere else.
resource topicDeadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, topic.id, blobDataContributor)
  scope: deadLetterContainer
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
  }
}

resource dropCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'stac-drop-created'
  dependsOn: [
    topicSender
    topicDeadLetterWriter
  ]
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    deliveryWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      destination: {
        endpointType: 'StorageQueue'
        properties: {
          resourceId: storage.id // the account, not the queue
          queueName: dropEventsQueueName
          queueMessageTimeToLiveInSeconds: -1 // never expire: an upload waits until the app reads it
        }
      }
    }
    // When the retry policy gives up (or at once, on an error retries cannot fix, e.g. a deleted queue), the
    // event is written as a JSON blob to the dead-letter container instead of being dropped.
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id // the account, not the container
          blobContainerName: deadLetterContainerName
        }
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${dropContainerName}/'
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
  }
}

output topicName string = topic.name
output subscriptionName string = dropCreated.name
