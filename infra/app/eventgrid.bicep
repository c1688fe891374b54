// Uploads start jobs: an Event Grid system topic on the storage account delivers the drop container's
// BlobCreated events to the drop-events queue, authenticating as the topic's own identity (no SAS, no key).
// Only one system topic may exist per storage account: if one already does (e.g. Defender for Storage made it),
// create the subscription on that topic instead (README "Deploying").

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

// Storage Queue Data Message Sender: add messages, nothing else.
var queueMessageSender = 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource queueService 'queueServices' existing = {
    name: 'default'

    resource dropEvents 'queues' existing = {
      name: dropEventsQueueName
    }
  }
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
  name: guid(storage::queueService::dropEvents.id, topic.id, queueMessageSender)
  scope: storage::queueService::dropEvents
  properties: {
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueMessageSender)
  }
}

resource dropCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'stac-drop-created'
  dependsOn: [
    topicSender
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
